#include "common/failpoint.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "common/check.h"

namespace tx {
namespace failpoint_internal {

std::atomic<uint32_t> g_armed_count{0};

namespace {

constexpr size_t kMaxNameBytes = 128;

enum class Action { kOff, kCrash, kError, kSleep, kCallback };

struct Spec {
  Action action = Action::kOff;
  Status::Code error_code = Status::Code::kIOError;
  uint32_t sleep_ms = 0;
  uint64_t skip = 0;       // hits that pass before the first fire
  uint64_t max_fires = 0;  // 0: unlimited
  double probability = 1.0;
  std::string text;  // as given, for ListFailPoints()
};

}  // namespace

struct Site {
  explicit Site(std::string n) : name(std::move(n)) {}

  const std::string name;
  // Mirrors spec.action != kOff, so that unarmed sites skip the mutex while others are armed.
  std::atomic<bool> armed{false};

  std::mutex mu;
  Spec spec;                       // GUARDED_BY(mu)
  std::function<void()> callback;  // GUARDED_BY(mu)
  uint64_t hits = 0;               // GUARDED_BY(mu)
  uint64_t fires = 0;              // GUARDED_BY(mu)
  std::mt19937_64 rng;             // GUARDED_BY(mu)
  bool warned_plain_site = false;  // GUARDED_BY(mu)
  bool ever_armed = false;         // GUARDED_BY(mu)
};

namespace {

class Registry {
 public:
  static Registry& Get() {
    // Leaked: sites may be hit by threads still running while the process exits.
    static Registry* const registry = new Registry();
    return *registry;
  }

  // Null if the registry is full and `name` is new and `may_fail`.
  Site* FindOrCreate(std::string_view name, bool may_fail) {
    std::lock_guard lock(mu_);
    auto it = sites_.find(name);
    if (it != sites_.end()) return it->second.get();
    if (may_fail && sites_.size() >= kMaxFailPoints) return nullptr;
    auto site = std::make_unique<Site>(std::string(name));
    Site* raw = site.get();
    sites_.emplace(raw->name, std::move(site));
    return raw;
  }

  Site* Find(std::string_view name) {
    std::lock_guard lock(mu_);
    auto it = sites_.find(name);
    return it == sites_.end() ? nullptr : it->second.get();
  }

  std::vector<Site*> All() {
    std::lock_guard lock(mu_);
    std::vector<Site*> all;
    for (auto& [name, site] : sites_) all.push_back(site.get());
    return all;
  }

  uint64_t seed() {
    std::lock_guard lock(mu_);
    return seed_;
  }
  void set_seed(uint64_t seed) {
    std::lock_guard lock(mu_);
    seed_ = seed;
  }

 private:
  Registry() : seed_(std::random_device{}()) {}

  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Site>, std::less<>> sites_;  // GUARDED_BY(mu_)
  uint64_t seed_;                                                    // GUARDED_BY(mu_)
};

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

Status CheckName(std::string_view name) {
  if (!IsValidName(name)) {
    return Status::InvalidArgument(fmt::format(
        "bad failpoint name '{}': want 1..{} characters from [a-z0-9_.]", name, kMaxNameBytes));
  }
  return Status::OK();
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<uint64_t> ParseUint(std::string_view s) {
  uint64_t v = 0;
  if (s.empty() || s.front() == '+' || s.front() == '-') return std::nullopt;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> ParseProbability(std::string_view s) {
  double v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  if (!(v > 0.0 && v <= 1.0)) return std::nullopt;  // also rejects NaN
  return v;
}

std::optional<Status::Code> ParseCodeName(std::string_view name) {
  for (int i = 1; i <= static_cast<int>(Status::Code::kCancelled); ++i) {
    auto code = static_cast<Status::Code>(i);
    if (StatusCodeName(code) == name) return code;
  }
  return std::nullopt;
}

StatusOr<Spec> ParseSpec(std::string_view text) {
  Spec spec;
  spec.text = std::string(Trim(text));
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument(fmt::format("bad failpoint spec '{}': {}", text, why));
  };

  std::vector<std::string_view> parts;
  std::string_view rest = spec.text;
  while (true) {
    size_t comma = rest.find(',');
    parts.push_back(Trim(rest.substr(0, comma)));
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }

  std::string_view action = parts[0];
  std::optional<std::string_view> arg;
  if (size_t open = action.find('('); open != std::string_view::npos) {
    if (action.back() != ')') return bad("unbalanced parenthesis");
    arg = action.substr(open + 1, action.size() - open - 2);
    action = action.substr(0, open);
  }
  if (action == "off" || action == "crash") {
    if (arg) return bad(fmt::format("'{}' takes no argument", action));
    spec.action = action == "off" ? Action::kOff : Action::kCrash;
  } else if (action == "error") {
    spec.action = Action::kError;
    if (arg) {
      auto code = ParseCodeName(*arg);
      if (!code) return bad(fmt::format("unknown Status code '{}' (e.g. IOError, NoSpace)", *arg));
      spec.error_code = *code;
    }
  } else if (action == "sleep") {
    auto ms = arg ? ParseUint(*arg) : std::nullopt;
    if (!ms || *ms > kMaxFailPointSleepMs) {
      return bad(
          fmt::format("sleep needs milliseconds in 0..{}, e.g. sleep(100)", kMaxFailPointSleepMs));
    }
    spec.action = Action::kSleep;
    spec.sleep_ms = static_cast<uint32_t>(*ms);
  } else {
    return bad(fmt::format("unknown action '{}' (want off, crash, error or sleep)", action));
  }

  bool has_nth = false;
  bool has_skip_or_times = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    std::string_view m = parts[i];
    size_t eq = m.find('=');
    if (eq == std::string_view::npos) return bad(fmt::format("modifier '{}' lacks '='", m));
    std::string_view key = Trim(m.substr(0, eq));
    std::string_view value = Trim(m.substr(eq + 1));
    if (key == "prob") {
      auto p = ParseProbability(value);
      if (!p) return bad(fmt::format("prob '{}' is not in (0, 1]", value));
      spec.probability = *p;
      continue;
    }
    auto n = ParseUint(value);
    if (!n) return bad(fmt::format("{} '{}' is not a non-negative integer", key, value));
    if (key == "nth") {
      if (*n == 0) return bad("nth counts from 1");
      has_nth = true;
      spec.skip = *n - 1;
      spec.max_fires = 1;
    } else if (key == "skip") {
      has_skip_or_times = true;
      spec.skip = *n;
    } else if (key == "times") {
      if (*n == 0) return bad("times must be at least 1 (use off to disarm)");
      has_skip_or_times = true;
      spec.max_fires = *n;
    } else {
      return bad(fmt::format("unknown modifier '{}' (want nth, skip, times or prob)", key));
    }
  }
  if (has_nth && has_skip_or_times) return bad("nth cannot be combined with skip or times");
  if (spec.action == Action::kOff && parts.size() > 1) return bad("off takes no modifiers");
  return spec;
}

uint64_t HashName(std::string_view name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

// Requires site->mu held.
void SetArmedLocked(Site* site, bool armed) {
  bool was = site->armed.exchange(armed, std::memory_order_relaxed);
  if (was == armed) return;
  if (armed) {
    g_armed_count.fetch_add(1, std::memory_order_relaxed);
  } else {
    g_armed_count.fetch_sub(1, std::memory_order_relaxed);
  }
}

void ArmLocked(Site* site, Spec spec, std::function<void()> callback, uint64_t seed) {
  site->spec = std::move(spec);
  site->callback = std::move(callback);
  site->hits = 0;
  site->fires = 0;
  site->rng.seed(seed ^ HashName(site->name));
  site->warned_plain_site = false;
  site->ever_armed = true;
  SetArmedLocked(site, site->spec.action != Action::kOff);
}

[[noreturn]] void CrashNow(const std::string& name) {
  // write(2), not spdlog: nothing buffered may reach the disk after this point, as with kill -9.
  std::string line = fmt::format("failpoint {}: crash (exit {})\n", name, kFailPointCrashExitCode);
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
  ::_exit(kFailPointCrashExitCode);
}

}  // namespace

Site* RegisterSite(const char* name) {
  TX_CHECK(IsValidName(name), "invalid failpoint name '{}' in code", name);
  return Registry::Get().FindOrCreate(name, /*may_fail=*/false);
}

Status Evaluate(Site* site, bool can_return_error) {
  if (!site->armed.load(std::memory_order_relaxed)) return Status::OK();
  Spec spec;
  std::function<void()> callback;
  {
    std::lock_guard lock(site->mu);
    if (site->spec.action == Action::kOff) return Status::OK();  // disarmed meanwhile
    if (site->spec.action == Action::kError && !can_return_error) {
      if (!site->warned_plain_site) {
        site->warned_plain_site = true;
        spdlog::warn("failpoint {} is armed with '{}' but its site cannot return an error; ignored",
                     site->name, site->spec.text);
      }
      return Status::OK();
    }
    ++site->hits;
    if (site->hits <= site->spec.skip) return Status::OK();
    if (site->spec.probability < 1.0 &&
        std::uniform_real_distribution<double>(0.0, 1.0)(site->rng) >= site->spec.probability) {
      return Status::OK();
    }
    ++site->fires;
    spec = site->spec;
    callback = site->callback;
    if (site->spec.max_fires != 0 && site->fires >= site->spec.max_fires) {
      site->spec.action = Action::kOff;
      site->spec.text = "off";
      site->callback = nullptr;
      SetArmedLocked(site, false);
    }
  }
  switch (spec.action) {
    case Action::kOff:
      break;
    case Action::kCrash:
      CrashNow(site->name);
    case Action::kError:
      return Status(spec.error_code, fmt::format("injected by failpoint {}", site->name));
    case Action::kSleep:
      std::this_thread::sleep_for(std::chrono::milliseconds(spec.sleep_ms));
      break;
    case Action::kCallback:
      callback();
      break;
  }
  return Status::OK();
}

}  // namespace failpoint_internal

using failpoint_internal::Registry;
using failpoint_internal::Site;

Status ArmFailPoint(std::string_view name, std::string_view spec_text) {
  TX_RETURN_IF_ERROR(failpoint_internal::CheckName(name));
  TX_ASSIGN_OR_RETURN(failpoint_internal::Spec spec, failpoint_internal::ParseSpec(spec_text));
  Site* site = Registry::Get().FindOrCreate(name, /*may_fail=*/true);
  if (site == nullptr) {
    return Status::ResourceExhausted(
        fmt::format("cannot arm failpoint {}: {} failpoints already known", name, kMaxFailPoints));
  }
  uint64_t seed = Registry::Get().seed();
  std::lock_guard lock(site->mu);
  failpoint_internal::ArmLocked(site, std::move(spec), nullptr, seed);
  return Status::OK();
}

Status ArmFailPoints(std::string_view list) {
  std::vector<std::pair<std::string_view, std::string_view>> items;
  std::string_view rest = list;
  while (!rest.empty()) {
    size_t semi = rest.find(';');
    std::string_view item = failpoint_internal::Trim(rest.substr(0, semi));
    rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
    if (item.empty()) continue;  // tolerate "a=crash;" and ";;"
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return Status::InvalidArgument(fmt::format("bad failpoint '{}': want name=spec", item));
    }
    std::string_view name = failpoint_internal::Trim(item.substr(0, eq));
    std::string_view spec = failpoint_internal::Trim(item.substr(eq + 1));
    TX_RETURN_IF_ERROR(failpoint_internal::CheckName(name));
    TX_RETURN_IF_ERROR(failpoint_internal::ParseSpec(spec).status().Annotate(name));
    items.emplace_back(name, spec);
  }
  for (auto [name, spec] : items) TX_RETURN_IF_ERROR(ArmFailPoint(name, spec));
  return Status::OK();
}

Status ArmFailPointsFromEnv() {
  if (const char* seed = std::getenv("TX_FAILPOINTS_SEED"); seed != nullptr) {
    auto value = failpoint_internal::ParseUint(seed);
    if (!value) {
      return Status::InvalidArgument(
          fmt::format("TX_FAILPOINTS_SEED='{}' is not a non-negative integer", seed));
    }
    SetFailPointSeed(*value);
  }
  const char* list = std::getenv("TX_FAILPOINTS");
  if (list == nullptr || *list == '\0') return Status::OK();
  TX_RETURN_IF_ERROR(ArmFailPoints(list).Annotate("TX_FAILPOINTS"));
  spdlog::warn("failpoints armed from TX_FAILPOINTS: {}", list);
  return Status::OK();
}

void ArmFailPointCallback(std::string_view name, std::function<void()> callback) {
  TX_CHECK(failpoint_internal::IsValidName(name), "invalid failpoint name '{}'", name);
  TX_CHECK(callback != nullptr);
  Site* site = Registry::Get().FindOrCreate(name, /*may_fail=*/false);
  failpoint_internal::Spec spec;
  spec.action = failpoint_internal::Action::kCallback;
  spec.text = "callback";
  uint64_t seed = Registry::Get().seed();
  std::lock_guard lock(site->mu);
  failpoint_internal::ArmLocked(site, std::move(spec), std::move(callback), seed);
}

void DisarmFailPoint(std::string_view name) {
  Site* site = Registry::Get().Find(name);
  if (site == nullptr) return;
  std::lock_guard lock(site->mu);
  site->spec.action = failpoint_internal::Action::kOff;
  site->spec.text = "off";
  site->callback = nullptr;
  failpoint_internal::SetArmedLocked(site, false);
}

void DisarmAllFailPoints() {
  for (Site* site : Registry::Get().All()) DisarmFailPoint(site->name);
}

uint64_t FailPointFireCount(std::string_view name) {
  Site* site = Registry::Get().Find(name);
  if (site == nullptr) return 0;
  std::lock_guard lock(site->mu);
  return site->fires;
}

std::vector<FailPointInfo> ListFailPoints() {
  std::vector<FailPointInfo> result;
  for (Site* site : Registry::Get().All()) {
    std::lock_guard lock(site->mu);
    if (!site->ever_armed) continue;
    result.push_back({site->name, site->spec.text, site->hits, site->fires});
  }
  return result;
}

void SetFailPointSeed(uint64_t seed) { Registry::Get().set_seed(seed); }

ScopedFailPoint::ScopedFailPoint(std::string_view name, std::string_view spec) : name_(name) {
  Status s = ArmFailPoint(name, spec);
  TX_CHECK(s.ok(), "ScopedFailPoint({}, {}): {}", name, spec, s.ToString());
}

ScopedFailPoint::ScopedFailPoint(std::string_view name, std::function<void()> callback)
    : name_(name) {
  ArmFailPointCallback(name, std::move(callback));
}

ScopedFailPoint::~ScopedFailPoint() { DisarmFailPoint(name_); }

}  // namespace tx
