// Prometheus metrics: counters, gauges and histograms with labels, rendered in the text
// exposition format (version 0.0.4) for GET /metrics (see common/metrics_http.h).
//
//   MetricsRegistry* m = MetricsRegistry::Default();
//   Counter* appends = m->AddCounter("tx_wal_appends_total", "Records appended to the WAL.");
//   auto* rpcs = m->AddHistogramFamily("tx_rpc_latency_seconds", "Server-side RPC latency.",
//                                      {"method"}, kLatencyBucketsSeconds);
//   Histogram* prepare = rpcs->WithLabels({"Prepare"});  // look up once, keep the pointer
//   appends->Increment();
//   prepare->Observe(0.0004);
//
// Hot paths hold on to the Counter/Gauge/Histogram pointer: updating one is a relaxed atomic
// read-modify-write (a histogram: a bucket search over its bounds plus two of them), with no
// lock and no allocation. Finding a series by label values takes the family's mutex.
//
// Naming follows Prometheus conventions: base units (seconds, bytes), counters end in _total.
// Metric and label names are fixed strings in code, so an invalid name, or registering one name
// twice with a different kind, help, labels or buckets, is a programmer error (CHECK). The same
// definition registered twice returns the same family, so components may each register what
// they use.
//
// Everything here is thread-safe. Families and series live as long as their registry, and
// pointers to them stay valid for that long.

#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace tx {

// Upper bounds (le) for latencies in seconds: 25 µs (a loopback RPC) to 10 s (a stuck fsync or
// an election), roughly 1-2.5-5 per decade.
inline const std::vector<double> kLatencyBucketsSeconds = {
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,    0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};

// start, start*factor, ... (count bounds). Requires start > 0, factor > 1, count >= 1.
std::vector<double> ExponentialBuckets(double start, double factor, size_t count);

// A family stops creating series at this many label combinations: past it, new combinations
// share one series whose label values are all "overflow" (and a warning is logged once). A label
// that takes unbounded values (a txid, a client port) is a bug, and this keeps such a bug from
// growing memory and scrape size without limit.
inline constexpr size_t kMaxSeriesPerFamily = 1000;

// A monotonically increasing count.
class Counter {
 public:
  void Increment(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down (queue depth, current term, leader or not).
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into fixed buckets and keeps their sum.
class Histogram {
 public:
  // `bounds`: strictly increasing finite upper bounds; +Inf is implicit. Must outlive this.
  explicit Histogram(const std::vector<double>* bounds);

  // Counts `value` in the first bucket whose bound is >= value (NaN goes to +Inf).
  void Observe(double value);
  void ObserveDuration(std::chrono::nanoseconds d) {
    Observe(std::chrono::duration<double>(d).count());
  }

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf; cumulative.back() == count
    uint64_t count = 0;
    double sum = 0;
  };
  // Consistent count and buckets; the sum may lag concurrent observations slightly.
  Snapshot TakeSnapshot() const;

 private:
  const std::vector<double>* const bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_->size() + 1, not cumulative
  std::atomic<double> sum_{0};
};

enum class MetricKind { kCounter, kGauge, kHistogram };

namespace metrics_internal {

// What the families share: the definition and the series by label values.
class FamilyBase {
 public:
  FamilyBase(MetricKind kind, std::string name, std::string help,
             std::vector<std::string> label_names, std::vector<double> bounds);
  virtual ~FamilyBase() = default;

  MetricKind kind() const { return kind_; }
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  const std::vector<double>& bounds() const { return bounds_; }

  // Appends this family's lines in the text format.
  void Render(std::string* out) const;

 protected:
  // Returns the series for `values`, creating it with MakeSeries() if new.
  void* FindOrCreate(const std::vector<std::string>& values);
  virtual std::shared_ptr<void> MakeSeries() const = 0;

 private:
  const MetricKind kind_;
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only

  mutable std::mutex mu_;
  // Ordered so that rendering is stable. Values are Counter, Gauge or Histogram by kind_.
  std::map<std::vector<std::string>, std::shared_ptr<void>> series_;  // GUARDED_BY(mu_)
  bool warned_overflow_ = false;                                      // GUARDED_BY(mu_)
};

}  // namespace metrics_internal

// One metric name with a fixed set of label names; T is Counter, Gauge or Histogram.
template <typename T>
class MetricFamily final : public metrics_internal::FamilyBase {
 public:
  using FamilyBase::FamilyBase;

  // The series with these label values (one per label name, in order; CHECKed). Created on
  // first use. Keep the pointer on hot paths.
  T* WithLabels(const std::vector<std::string>& values) {
    return static_cast<T*>(FindOrCreate(values));
  }

 private:
  std::shared_ptr<void> MakeSeries() const override {
    if constexpr (std::is_same_v<T, Histogram>) {
      return std::make_shared<Histogram>(&bounds());
    } else {
      return std::make_shared<T>();
    }
  }
};

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

// A set of metric families. Thread-safe. Programs use Default(); tests (and simulations that
// run several nodes in one process) make their own.
class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // The process-wide registry. Never destroyed.
  static MetricsRegistry* Default();

  CounterFamily* AddCounterFamily(std::string_view name, std::string_view help,
                                  std::vector<std::string> label_names);
  GaugeFamily* AddGaugeFamily(std::string_view name, std::string_view help,
                              std::vector<std::string> label_names);
  HistogramFamily* AddHistogramFamily(std::string_view name, std::string_view help,
                                      std::vector<std::string> label_names,
                                      std::vector<double> bounds);

  // Label-less shorthands.
  Counter* AddCounter(std::string_view name, std::string_view help);
  Gauge* AddGauge(std::string_view name, std::string_view help);
  Histogram* AddHistogram(std::string_view name, std::string_view help, std::vector<double> bounds);

  // Every family in the text exposition format, families by name, series by label values.
  std::string RenderText() const;

 private:
  metrics_internal::FamilyBase* Add(std::unique_ptr<metrics_internal::FamilyBase> family);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<metrics_internal::FamilyBase>, std::less<>>
      families_;  // GUARDED_BY(mu_)
};

// The Content-Type of RenderText()'s output.
inline constexpr std::string_view kPrometheusTextContentType =
    "text/plain; version=0.0.4; charset=utf-8";

}  // namespace tx
