#include "common/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

namespace tx {
namespace {

TEST(Metrics, CounterRendersHelpTypeAndValue) {
  MetricsRegistry registry;
  Counter* c = registry.AddCounter("tx_test_events_total", "Events seen.");
  c->Increment();
  c->Increment(41);
  EXPECT_EQ(42u, c->Value());
  EXPECT_EQ(
      "# HELP tx_test_events_total Events seen.\n"
      "# TYPE tx_test_events_total counter\n"
      "tx_test_events_total 42\n",
      registry.RenderText());
}

TEST(Metrics, FamiliesRenderByNameAndSeriesByLabelValues) {
  MetricsRegistry registry;
  auto* rpcs = registry.AddCounterFamily("tx_b_total", "B.", {"method", "code"});
  rpcs->WithLabels({"Prepare", "OK"})->Increment(2);
  rpcs->WithLabels({"Commit", "OK"})->Increment(1);
  registry.AddGauge("tx_a", "A.")->Set(3);
  EXPECT_EQ(
      "# HELP tx_a A.\n"
      "# TYPE tx_a gauge\n"
      "tx_a 3\n"
      "# HELP tx_b_total B.\n"
      "# TYPE tx_b_total counter\n"
      "tx_b_total{method=\"Commit\",code=\"OK\"} 1\n"
      "tx_b_total{method=\"Prepare\",code=\"OK\"} 2\n",
      registry.RenderText());
}

TEST(Metrics, SameLabelValuesGiveSameSeries) {
  MetricsRegistry registry;
  auto* family = registry.AddCounterFamily("tx_x_total", "X.", {"peer"});
  EXPECT_EQ(family->WithLabels({"1"}), family->WithLabels({"1"}));
  EXPECT_NE(family->WithLabels({"1"}), family->WithLabels({"2"}));
}

TEST(Metrics, LabelValuesAndHelpAreEscaped) {
  MetricsRegistry registry;
  auto* family = registry.AddGaugeFamily("tx_g", "Line one\nback\\slash \"quoted\"", {"path"});
  family->WithLabels({"a\"b\\c\nd"})->Set(1);
  EXPECT_EQ(
      "# HELP tx_g Line one\\nback\\\\slash \"quoted\"\n"
      "# TYPE tx_g gauge\n"
      "tx_g{path=\"a\\\"b\\\\c\\nd\"} 1\n",
      registry.RenderText());
}

TEST(Metrics, GaugeAddsAndRendersSpecialValues) {
  MetricsRegistry registry;
  auto* family = registry.AddGaugeFamily("tx_g", "G.", {"k"});
  Gauge* a = family->WithLabels({"a"});
  a->Set(1.5);
  a->Add(-4);
  EXPECT_DOUBLE_EQ(-2.5, a->Value());
  family->WithLabels({"b"})->Set(std::numeric_limits<double>::quiet_NaN());
  family->WithLabels({"c"})->Set(std::numeric_limits<double>::infinity());
  family->WithLabels({"d"})->Set(-std::numeric_limits<double>::infinity());
  family->WithLabels({"e"})->Set(0.000125);
  EXPECT_EQ(
      "# HELP tx_g G.\n"
      "# TYPE tx_g gauge\n"
      "tx_g{k=\"a\"} -2.5\n"
      "tx_g{k=\"b\"} NaN\n"
      "tx_g{k=\"c\"} +Inf\n"
      "tx_g{k=\"d\"} -Inf\n"
      "tx_g{k=\"e\"} 0.000125\n",
      registry.RenderText());
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  MetricsRegistry registry;
  auto* family =
      registry.AddHistogramFamily("tx_lat_seconds", "Latency.", {"op"}, {0.001, 0.01, 0.1});
  Histogram* h = family->WithLabels({"append"});
  h->Observe(0.0005);  // le 0.001
  h->Observe(0.001);   // le 0.001: bounds are inclusive
  h->Observe(0.05);    // le 0.1
  h->Observe(7);       // +Inf only
  EXPECT_EQ(
      "# HELP tx_lat_seconds Latency.\n"
      "# TYPE tx_lat_seconds histogram\n"
      "tx_lat_seconds_bucket{op=\"append\",le=\"0.001\"} 2\n"
      "tx_lat_seconds_bucket{op=\"append\",le=\"0.01\"} 2\n"
      "tx_lat_seconds_bucket{op=\"append\",le=\"0.1\"} 3\n"
      "tx_lat_seconds_bucket{op=\"append\",le=\"+Inf\"} 4\n"
      "tx_lat_seconds_sum{op=\"append\"} 7.0515\n"
      "tx_lat_seconds_count{op=\"append\"} 4\n",
      registry.RenderText());
}

TEST(Metrics, UnlabelledHistogramAndDurations) {
  MetricsRegistry registry;
  Histogram* h = registry.AddHistogram("tx_h_seconds", "H.", {1, 2});
  h->ObserveDuration(std::chrono::milliseconds(1500));
  h->Observe(std::numeric_limits<double>::quiet_NaN());
  Histogram::Snapshot snap = h->TakeSnapshot();
  EXPECT_EQ((std::vector<uint64_t>{0, 1, 2}), snap.cumulative);
  EXPECT_EQ(2u, snap.count);
  std::string text = registry.RenderText();
  EXPECT_NE(std::string::npos, text.find("tx_h_seconds_bucket{le=\"2\"} 1\n")) << text;
  EXPECT_NE(std::string::npos, text.find("tx_h_seconds_count 2\n")) << text;
}

TEST(Metrics, DefaultLatencyBucketsAreIncreasing) {
  ASSERT_FALSE(kLatencyBucketsSeconds.empty());
  for (size_t i = 1; i < kLatencyBucketsSeconds.size(); ++i) {
    EXPECT_LT(kLatencyBucketsSeconds[i - 1], kLatencyBucketsSeconds[i]);
  }
  MetricsRegistry registry;
  registry.AddHistogram("tx_ok_seconds", "Accepted.", kLatencyBucketsSeconds);
}

TEST(Metrics, ExponentialBuckets) {
  EXPECT_EQ((std::vector<double>{1, 2, 4, 8}), ExponentialBuckets(1, 2, 4));
  EXPECT_DEATH(ExponentialBuckets(0, 2, 4), "ExponentialBuckets");
}

TEST(Metrics, SameDefinitionTwiceReturnsSameFamily) {
  MetricsRegistry registry;
  auto* a = registry.AddCounterFamily("tx_c_total", "C.", {"x"});
  auto* b = registry.AddCounterFamily("tx_c_total", "C.", {"x"});
  EXPECT_EQ(a, b);
  EXPECT_EQ(registry.AddGauge("tx_g", "G."), registry.AddGauge("tx_g", "G."));
}

TEST(Metrics, ConflictingDefinitionIsAProgrammerError) {
  MetricsRegistry registry;
  registry.AddCounterFamily("tx_c_total", "C.", {"x"});
  EXPECT_DEATH(registry.AddGaugeFamily("tx_c_total", "C.", {"x"}), "registered twice");
  EXPECT_DEATH(registry.AddCounterFamily("tx_c_total", "C.", {"y"}), "registered twice");
  registry.AddHistogram("tx_h", "H.", {1, 2});
  EXPECT_DEATH(registry.AddHistogram("tx_h", "H.", {1, 3}), "registered twice");
}

TEST(Metrics, InvalidDefinitionsAreProgrammerErrors) {
  MetricsRegistry registry;
  EXPECT_DEATH(registry.AddCounter("", "x"), "invalid metric name");
  EXPECT_DEATH(registry.AddCounter("9lives", "x"), "invalid metric name");
  EXPECT_DEATH(registry.AddCounter("has-dash", "x"), "invalid metric name");
  EXPECT_DEATH(registry.AddCounterFamily("tx_ok", "x", {"__reserved"}), "invalid label name");
  EXPECT_DEATH(registry.AddCounterFamily("tx_ok", "x", {"a", "a"}), "appears twice");
  EXPECT_DEATH(registry.AddHistogramFamily("tx_ok", "x", {"le"}, {1}), "reserved");
  EXPECT_DEATH(registry.AddHistogram("tx_ok", "x", {}), "no buckets");
  EXPECT_DEATH(registry.AddHistogram("tx_ok", "x", {2, 1}), "not strictly increasing");
  EXPECT_DEATH(registry.AddHistogram("tx_ok", "x", {1, INFINITY}), "not finite");
  auto* family = registry.AddCounterFamily("tx_two_total", "x", {"a", "b"});
  EXPECT_DEATH(family->WithLabels({"only-one"}), "has 2 label\\(s\\) but got 1");
}

TEST(Metrics, SeriesPerFamilyAreBoundedByAnOverflowSeries) {
  MetricsRegistry registry;
  auto* family = registry.AddCounterFamily("tx_by_txid_total", "A cardinality bug.", {"txid"});
  for (size_t i = 0; i < kMaxSeriesPerFamily + 50; ++i) {
    family->WithLabels({std::to_string(i)})->Increment();
  }
  std::string text = registry.RenderText();
  size_t lines = std::count(text.begin(), text.end(), '\n');
  EXPECT_EQ(2 + kMaxSeriesPerFamily + 1, lines);  // HELP, TYPE, series, one overflow series
  EXPECT_NE(std::string::npos, text.find("tx_by_txid_total{txid=\"overflow\"} 50\n"));
  // Existing series keep working past the bound.
  family->WithLabels({"0"})->Increment();
  EXPECT_EQ(2u, family->WithLabels({"0"})->Value());
}

TEST(Metrics, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry registry;
  Counter* c = registry.AddCounter("tx_c_total", "C.");
  Gauge* g = registry.AddGauge("tx_g", "G.");
  Histogram* h = registry.AddHistogram("tx_h", "H.", {0.5});
  auto* family = registry.AddCounterFamily("tx_f_total", "F.", {"k"});
  constexpr int kThreads = 4;
#if defined(TX_SANITIZE_BUILD)
  constexpr int kPerThread = 20000;
#else
  constexpr int kPerThread = 200000;
#endif
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        c->Increment();
        g->Add(1);
        h->Observe((i % 2) ? 0.25 : 1.0);
        if (i % 1000 == 0) family->WithLabels({std::to_string(t)})->Increment();
      }
    });
  }
  // Scrapes run concurrently with the updates.
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(registry.RenderText().empty());
  for (auto& t : threads) t.join();
  EXPECT_EQ(uint64_t{kThreads} * kPerThread, c->Value());
  EXPECT_DOUBLE_EQ(double{kThreads} * kPerThread, g->Value());
  Histogram::Snapshot snap = h->TakeSnapshot();
  EXPECT_EQ(uint64_t{kThreads} * kPerThread, snap.count);
  EXPECT_EQ(uint64_t{kThreads} * kPerThread / 2, snap.cumulative[0]);
  EXPECT_DOUBLE_EQ(kThreads * kPerThread / 2 * (0.25 + 1.0), snap.sum);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(uint64_t{kPerThread / 1000}, family->WithLabels({std::to_string(t)})->Value());
  }
}

TEST(Metrics, DefaultRegistryIsShared) {
  EXPECT_EQ(MetricsRegistry::Default(), MetricsRegistry::Default());
  Counter* c = MetricsRegistry::Default()->AddCounter("tx_default_test_total", "D.");
  c->Increment();
  EXPECT_NE(std::string::npos,
            MetricsRegistry::Default()->RenderText().find("tx_default_test_total 1\n"));
}

}  // namespace
}  // namespace tx
