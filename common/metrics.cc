#include "common/metrics.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace tx {
namespace {

bool IsValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool IsValidLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;  // "__" is reserved by Prometheus
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// Prometheus text format numbers: Go's ParseFloat syntax, with NaN, +Inf and -Inf spelled so.
std::string FormatDouble(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

// HELP text escapes backslash and newline; label values also escape the double quote.
void AppendEscaped(std::string* out, std::string_view s, bool escape_quote) {
  for (char c : s) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '"' && escape_quote) {
      out->append("\\\"");
    } else {
      out->push_back(c);
    }
  }
}

// Appends `{a="x",b="y"}` (plus an `le` label for buckets); nothing when there are no labels.
void AppendLabels(std::string* out, const std::vector<std::string>& names,
                  const std::vector<std::string>& values, const std::string* le = nullptr) {
  if (names.empty() && le == nullptr) return;
  out->push_back('{');
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out->push_back(',');
    out->append(names[i]);
    out->append("=\"");
    AppendEscaped(out, values[i], /*escape_quote=*/true);
    out->push_back('"');
  }
  if (le != nullptr) {
    if (!names.empty()) out->push_back(',');
    out->append("le=\"");
    out->append(*le);
    out->push_back('"');
  }
  out->push_back('}');
}

std::string_view KindName(MetricKind kind) {
  switch (kind) {
    case MetricKind::kCounter:
      return "counter";
    case MetricKind::kGauge:
      return "gauge";
    case MetricKind::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

std::vector<double> ExponentialBuckets(double start, double factor, size_t count) {
  TX_CHECK(start > 0 && factor > 1 && count >= 1, "ExponentialBuckets({}, {}, {})", start, factor,
           count);
  std::vector<double> bounds;
  double b = start;
  for (size_t i = 0; i < count; ++i, b *= factor) bounds.push_back(b);
  return bounds;
}

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  size_t i = std::isnan(value)
                 ? bounds_->size()
                 : static_cast<size_t>(std::lower_bound(bounds_->begin(), bounds_->end(), value) -
                                       bounds_->begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::TakeSnapshot() const {
  Snapshot snap;
  snap.cumulative.resize(bounds_->size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    snap.cumulative[i] = running;
  }
  snap.count = running;
  snap.sum = sum_.load(std::memory_order_relaxed);
  return snap;
}

namespace metrics_internal {

FamilyBase::FamilyBase(MetricKind kind, std::string name, std::string help,
                       std::vector<std::string> label_names, std::vector<double> bounds)
    : kind_(kind),
      name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)) {
  TX_CHECK(IsValidMetricName(name_), "invalid metric name '{}'", name_);
  for (size_t i = 0; i < label_names_.size(); ++i) {
    TX_CHECK(IsValidLabelName(label_names_[i]), "metric {}: invalid label name '{}'", name_,
             label_names_[i]);
    for (size_t j = 0; j < i; ++j) {
      TX_CHECK(label_names_[i] != label_names_[j], "metric {}: label '{}' appears twice", name_,
               label_names_[i]);
    }
    TX_CHECK(kind_ != MetricKind::kHistogram || label_names_[i] != "le",
             "histogram {}: label name 'le' is reserved for buckets", name_);
  }
  if (kind_ == MetricKind::kHistogram) {
    TX_CHECK(!bounds_.empty(), "histogram {} has no buckets", name_);
    for (size_t i = 0; i < bounds_.size(); ++i) {
      TX_CHECK(std::isfinite(bounds_[i]), "histogram {}: bucket bound {} is not finite", name_,
               bounds_[i]);
      TX_CHECK(i == 0 || bounds_[i - 1] < bounds_[i],
               "histogram {}: bucket bounds not strictly increasing at {} then {}", name_,
               bounds_[i == 0 ? 0 : i - 1], bounds_[i]);
    }
  } else {
    TX_CHECK(bounds_.empty());
  }
}

void* FamilyBase::FindOrCreate(const std::vector<std::string>& values) {
  TX_CHECK(values.size() == label_names_.size(), "metric {} has {} label(s) but got {} value(s)",
           name_, label_names_.size(), values.size());
  std::lock_guard lock(mu_);
  auto it = series_.find(values);
  if (it != series_.end()) return it->second.get();
  if (series_.size() >= kMaxSeriesPerFamily) {
    if (!warned_overflow_) {
      warned_overflow_ = true;
      spdlog::warn("metric {} reached {} series; further label values are counted as 'overflow'",
                   name_, kMaxSeriesPerFamily);
    }
    std::vector<std::string> overflow(label_names_.size(), "overflow");
    auto& slot = series_[overflow];  // may exceed the bound by this one series
    if (!slot) slot = MakeSeries();
    return slot.get();
  }
  auto series = MakeSeries();
  void* raw = series.get();
  series_.emplace(values, std::move(series));
  return raw;
}

void FamilyBase::Render(std::string* out) const {
  out->append("# HELP ");
  out->append(name_);
  out->push_back(' ');
  AppendEscaped(out, help_, /*escape_quote=*/false);
  out->append("\n# TYPE ");
  out->append(name_);
  out->push_back(' ');
  out->append(KindName(kind_));
  out->push_back('\n');

  std::lock_guard lock(mu_);
  for (const auto& [values, series] : series_) {
    switch (kind_) {
      case MetricKind::kCounter:
        out->append(name_);
        AppendLabels(out, label_names_, values);
        out->append(fmt::format(" {}\n", static_cast<const Counter*>(series.get())->Value()));
        break;
      case MetricKind::kGauge:
        out->append(name_);
        AppendLabels(out, label_names_, values);
        out->push_back(' ');
        out->append(FormatDouble(static_cast<const Gauge*>(series.get())->Value()));
        out->push_back('\n');
        break;
      case MetricKind::kHistogram: {
        Histogram::Snapshot snap = static_cast<const Histogram*>(series.get())->TakeSnapshot();
        for (size_t i = 0; i <= bounds_.size(); ++i) {
          std::string le = i < bounds_.size() ? FormatDouble(bounds_[i]) : "+Inf";
          out->append(name_);
          out->append("_bucket");
          AppendLabels(out, label_names_, values, &le);
          out->append(fmt::format(" {}\n", snap.cumulative[i]));
        }
        out->append(name_);
        out->append("_sum");
        AppendLabels(out, label_names_, values);
        out->push_back(' ');
        out->append(FormatDouble(snap.sum));
        out->push_back('\n');
        out->append(name_);
        out->append("_count");
        AppendLabels(out, label_names_, values);
        out->append(fmt::format(" {}\n", snap.count));
        break;
      }
    }
  }
}

}  // namespace metrics_internal

MetricsRegistry* MetricsRegistry::Default() {
  static MetricsRegistry* const registry = new MetricsRegistry();  // used until exit
  return registry;
}

metrics_internal::FamilyBase* MetricsRegistry::Add(
    std::unique_ptr<metrics_internal::FamilyBase> family) {
  std::lock_guard lock(mu_);
  auto it = families_.find(family->name());
  if (it == families_.end()) {
    auto* raw = family.get();
    families_.emplace(family->name(), std::move(family));
    return raw;
  }
  const auto& existing = *it->second;
  TX_CHECK(existing.kind() == family->kind() && existing.help() == family->help() &&
               existing.label_names() == family->label_names() &&
               existing.bounds() == family->bounds(),
           "metric {} registered twice with different definitions ({} '{}' labels [{}] vs {} "
           "'{}' labels [{}])",
           family->name(), KindName(existing.kind()), existing.help(),
           fmt::join(existing.label_names(), ","), KindName(family->kind()), family->help(),
           fmt::join(family->label_names(), ","));
  return it->second.get();
}

CounterFamily* MetricsRegistry::AddCounterFamily(std::string_view name, std::string_view help,
                                                 std::vector<std::string> label_names) {
  return static_cast<CounterFamily*>(Add(
      std::make_unique<CounterFamily>(MetricKind::kCounter, std::string(name), std::string(help),
                                      std::move(label_names), std::vector<double>{})));
}

GaugeFamily* MetricsRegistry::AddGaugeFamily(std::string_view name, std::string_view help,
                                             std::vector<std::string> label_names) {
  return static_cast<GaugeFamily*>(
      Add(std::make_unique<GaugeFamily>(MetricKind::kGauge, std::string(name), std::string(help),
                                        std::move(label_names), std::vector<double>{})));
}

HistogramFamily* MetricsRegistry::AddHistogramFamily(std::string_view name, std::string_view help,
                                                     std::vector<std::string> label_names,
                                                     std::vector<double> bounds) {
  return static_cast<HistogramFamily*>(Add(std::make_unique<HistogramFamily>(
      MetricKind::kHistogram, std::string(name), std::string(help), std::move(label_names),
      std::move(bounds))));
}

Counter* MetricsRegistry::AddCounter(std::string_view name, std::string_view help) {
  return AddCounterFamily(name, help, {})->WithLabels({});
}

Gauge* MetricsRegistry::AddGauge(std::string_view name, std::string_view help) {
  return AddGaugeFamily(name, help, {})->WithLabels({});
}

Histogram* MetricsRegistry::AddHistogram(std::string_view name, std::string_view help,
                                         std::vector<double> bounds) {
  return AddHistogramFamily(name, help, {}, std::move(bounds))->WithLabels({});
}

std::string MetricsRegistry::RenderText() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& [name, family] : families_) family->Render(&out);
  return out;
}

}  // namespace tx
