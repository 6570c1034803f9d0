#include "tools/txchaos/faults.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <set>

#include "tools/txchaos/control.h"

namespace tx::chaos {
namespace {

using namespace std::chrono_literals;

std::string JsonLinks(const std::vector<std::pair<std::string, std::string>>& links) {
  std::vector<std::string> items;
  for (const auto& [from, to] : links) items.push_back(JsonString(from + ">" + to));
  return fmt::format("[{}]", fmt::join(items, ","));
}

std::string JsonNames(const std::vector<std::string>& names) {
  std::vector<std::string> items;
  for (const std::string& n : names) items.push_back(JsonString(n));
  return fmt::format("[{}]", fmt::join(items, ","));
}

template <typename T>
const T& Pick(const std::vector<T>& items, std::mt19937_64& rng) {
  return items[std::uniform_int_distribution<size_t>(0, items.size() - 1)(rng)];
}

bool IsCoordinator(const std::string& node) { return node != kClientNode && node[0] == 'c'; }

double UniformReal(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

}  // namespace

FaultInjector::FaultInjector(InjectorOptions options) : options_(std::move(options)) {}

FaultInjector::~FaultInjector() {
  Stop();
  Join();
}

void FaultInjector::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const FaultStep& step : options_.steps) {
      agenda_.push_back({step.at_ms, next_order_++, [this, step] { Apply(step); }, false});
    }
  }
  thread_ = std::thread([this] { Loop(); });
}

void FaultInjector::Stop() {
  stop_.store(true);
  wake_.notify_all();
}

void FaultInjector::Join() {
  if (thread_.joinable()) thread_.join();
}

InjectorStats FaultInjector::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void FaultInjector::Schedule(int64_t at_ms, bool undo, std::function<void()> run) {
  std::lock_guard<std::mutex> lock(mu_);
  agenda_.push_back({at_ms, next_order_++, std::move(run), undo});
  wake_.notify_all();
}

void FaultInjector::Event(const std::string& members) {
  options_.history->AddEvent("fault", members);
}

void FaultInjector::Loop() {
  History* h = options_.history;
  while (!stop_.load()) {
    std::unique_lock<std::mutex> lock(mu_);
    auto next =
        std::min_element(agenda_.begin(), agenda_.end(), [](const Action& a, const Action& b) {
          // At equal times an undo goes first, so a step sees the previous one healed.
          if (a.at_ms != b.at_ms) return a.at_ms < b.at_ms;
          if (a.undo != b.undo) return a.undo;
          return a.order < b.order;
        });
    const int64_t now = h->NowMs();
    if (next != agenda_.end() && next->at_ms <= now &&
        next->at_ms < options_.timeline.fault_end_ms) {
      Action action = std::move(*next);
      agenda_.erase(next);
      lock.unlock();
      action.run();
      continue;
    }
    if (now >= options_.timeline.fault_end_ms) break;
    int64_t wake_at = options_.timeline.fault_end_ms;
    if (next != agenda_.end()) wake_at = std::min(wake_at, next->at_ms);
    wake_.wait_until(lock, h->start() + std::chrono::milliseconds(wake_at));
  }
  Heal();
}

void FaultInjector::Heal() {
  if (healed_.exchange(true)) return;
  std::vector<Action> undos;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Action& a : agenda_) {
      if (a.undo) undos.push_back(std::move(a));
    }
    agenda_.clear();
  }
  std::sort(undos.begin(), undos.end(), [](const Action& a, const Action& b) {
    return a.at_ms != b.at_ms ? a.at_ms < b.at_ms : a.order < b.order;
  });
  Event("\"action\":\"heal\"");
  for (Action& a : undos) a.run();
  options_.proxy->ClearAllFaults();
  LocalCluster* cluster = options_.cluster;
  for (const std::string& node : cluster->Nodes()) {
    NodeInfo info = cluster->Info(node);
    if (info.state == NodeState::kPaused) {
      cluster->Resume(node);
      Event(fmt::format("\"action\":\"resume\",\"node\":{},\"why\":\"heal\"", JsonString(node)));
    } else if (info.state == NodeState::kDown) {
      Status s = cluster->LaunchNode(
          node, options_.start_env ? options_.start_env(node) : std::vector<std::string>{});
      Event(fmt::format("\"action\":\"restart\",\"node\":{},\"why\":\"heal\"{}", JsonString(node),
                        s.ok() ? "" : ",\"error\":" + JsonString(s.ToString())));
    }
  }
  if (options_.on_heal) options_.on_heal();
}

std::string FaultInjector::SamplePhases(const std::string& kind) {
  std::map<std::string, uint64_t> in_flight;
  LocalCluster* cluster = options_.cluster;
  if (std::optional<std::string> leader = cluster->Leader(500ms)) {
    StatusOr<api::ListTransactionsResponse> list =
        ListTransactions(cluster->Info(*leader).address, 500ms, /*include_begun=*/true);
    if (list.ok()) {
      for (const api::TransactionView& v : list->transactions) {
        auto it = api::_TransactionPhase_VALUES_TO_NAMES.find(static_cast<int>(v.phase));
        ++in_flight[it == api::_TransactionPhase_VALUES_TO_NAMES.end() ? "?" : it->second];
      }
    }
  }
  for (const std::string& p : cluster->Participants()) {
    if (cluster->Info(p).state != NodeState::kRunning) continue;
    StatusOr<api::ListPreparedResponse> prepared = ListPrepared(cluster->Info(p).address, 500ms);
    if (prepared.ok() && !prepared->transactions.empty()) {
      in_flight["PREPARED"] += prepared->transactions.size();
    }
  }
  std::vector<std::string> items;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [phase, n] : in_flight) {
      items.push_back(fmt::format("{}:{}", JsonString(phase), n));
      ++stats_.coverage[kind][phase];
    }
  }
  return fmt::format(",\"in_flight\":{{{}}}", fmt::join(items, ","));
}

std::vector<std::pair<std::string, std::string>> FaultInjector::AllLinks() const {
  std::vector<std::pair<std::string, std::string>> links;
  const std::vector<std::string> coords = options_.cluster->Coordinators();
  const std::vector<std::string> parts = options_.cluster->Participants();
  for (const std::string& a : coords) {
    for (const std::string& b : coords) {
      if (a != b) links.emplace_back(a, b);
    }
    for (const std::string& p : parts) {
      links.emplace_back(a, p);
      links.emplace_back(p, a);
    }
    links.emplace_back(kClientNode, a);
  }
  for (const std::string& p : parts) {
    for (const std::string& q : parts) {
      if (p != q) links.emplace_back(p, q);
    }
    links.emplace_back(kClientNode, p);
  }
  return links;
}

void FaultInjector::SetLinks(const std::vector<std::pair<std::string, std::string>>& links,
                             const LinkFaults& faults) {
  for (const auto& [from, to] : links) {
    // Links exist for every pair AllLinks() names (the runner adds them all).
    (void)options_.proxy->SetFaults(from, to, faults);
  }
}

std::string FaultInjector::PickLeaderOrAny(std::mt19937_64& rng, bool* was_leader) {
  std::optional<std::string> leader = options_.cluster->Leader(500ms);
  if (leader.has_value()) {
    *was_leader = true;
    return *leader;
  }
  std::vector<std::string> up;
  for (const std::string& c : options_.cluster->Coordinators()) {
    if (options_.cluster->Info(c).state == NodeState::kRunning) up.push_back(c);
  }
  return up.empty() ? "" : Pick(up, rng);
}

std::string FaultInjector::PickFollower(std::mt19937_64& rng) {
  std::optional<std::string> leader = options_.cluster->Leader(500ms);
  std::vector<std::string> up;
  for (const std::string& c : options_.cluster->Coordinators()) {
    if (c != leader && options_.cluster->Info(c).state == NodeState::kRunning) up.push_back(c);
  }
  return up.empty() ? "" : Pick(up, rng);
}

std::string FaultInjector::PickParticipant(std::mt19937_64& rng) {
  std::vector<std::string> up;
  for (const std::string& p : options_.cluster->Participants()) {
    if (options_.cluster->Info(p).state == NodeState::kRunning) up.push_back(p);
  }
  return up.empty() ? "" : Pick(up, rng);
}

std::string FaultInjector::PickAny(std::mt19937_64& rng) {
  std::vector<std::string> up;
  for (const std::string& n : options_.cluster->Nodes()) {
    if (options_.cluster->Info(n).state == NodeState::kRunning) up.push_back(n);
  }
  return up.empty() ? "" : Pick(up, rng);
}

std::string FaultInjector::PickRole(const std::string& role, std::mt19937_64& rng,
                                    bool* was_leader) {
  *was_leader = false;
  if (role == "leader") return PickLeaderOrAny(rng, was_leader);
  if (role == "follower") return PickFollower(rng);
  if (role == "participant") return PickParticipant(rng);
  std::string node = PickAny(rng);
  if (!node.empty() && IsCoordinator(node)) {
    std::optional<std::string> leader = options_.cluster->Leader(500ms);
    *was_leader = leader == node;
  }
  return node;
}

void FaultInjector::Apply(const FaultStep& step) {
  std::mt19937_64 rng(step.seed);
  const size_t colon = step.kind.find(':');
  const std::string action = step.kind.substr(0, colon);
  const std::string variant = colon == std::string::npos ? "" : step.kind.substr(colon + 1);
  const int64_t undo_at = step.at_ms + step.hold_ms;
  LocalCluster* cluster = options_.cluster;
  const std::string base =
      fmt::format("\"kind\":{},\"planned_at\":{},\"hold\":{}{}", JsonString(step.kind), step.at_ms,
                  step.hold_ms, SamplePhases(step.kind));
  auto skipped = [&](const std::string& why) {
    Event(fmt::format("{},\"action\":\"skipped\",\"why\":{}", base, JsonString(why)));
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.steps_skipped;
  };
  auto ran = [&]() {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.steps_run;
    ++stats_.by_kind[step.kind];
  };

  if (action == "kill" || action == "pause") {
    bool was_leader = false;
    const std::string node = PickRole(variant, rng, &was_leader);
    if (node.empty()) return skipped("no running process fits");
    const int64_t t = options_.history->NowMs();
    if (action == "kill") {
      cluster->Kill(node);
    } else {
      cluster->Pause(node);
    }
    Event(fmt::format("{},\"action\":{},\"node\":{},\"leader\":{}", base, JsonString(action),
                      JsonString(node), was_leader ? "true" : "false"));
    ran();
    if (action == "kill" && was_leader) {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.leader_kill_ms.push_back(t);
    }
    Schedule(undo_at, true, [this, action, node] {
      if (action == "kill") {
        Status s = options_.cluster->LaunchNode(
            node, options_.start_env ? options_.start_env(node) : std::vector<std::string>{});
        Event(fmt::format("\"action\":\"restart\",\"node\":{}{}", JsonString(node),
                          s.ok() ? "" : ",\"error\":" + JsonString(s.ToString())));
      } else {
        options_.cluster->Resume(node);
        Event(fmt::format("\"action\":\"resume\",\"node\":{}", JsonString(node)));
      }
    });
    return;
  }

  if (action == "down") {
    const std::vector<std::string> coords = cluster->Coordinators();
    for (const std::string& c : coords) cluster->Kill(c);
    Event(fmt::format("{},\"action\":\"kill-all\",\"nodes\":{}", base, JsonNames(coords)));
    ran();
    if (options_.after_coordinators_down) options_.after_coordinators_down();
    Schedule(undo_at, true, [this, coords] {
      if (options_.before_coordinators_restart) options_.before_coordinators_restart();
      for (const std::string& c : coords) {
        Status s = options_.cluster->LaunchNode(
            c, options_.start_env ? options_.start_env(c) : std::vector<std::string>{});
        Event(fmt::format("\"action\":\"restart\",\"node\":{}{}", JsonString(c),
                          s.ok() ? "" : ",\"error\":" + JsonString(s.ToString())));
      }
    });
    return;
  }

  std::vector<std::pair<std::string, std::string>> links;
  LinkFaults faults;
  std::string detail;
  const std::vector<std::pair<std::string, std::string>> all = AllLinks();
  auto cut_between = [&](const std::set<std::string>& side_a) {
    for (const auto& l : all) {
      if ((side_a.count(l.first) != 0) != (side_a.count(l.second) != 0)) links.push_back(l);
    }
  };
  if (action == "partition") {
    faults.cut = true;
    bool was_leader = false;
    if (variant == "isolate-leader") {
      const std::string leader = PickLeaderOrAny(rng, &was_leader);
      if (leader.empty()) return skipped("no coordinator running");
      cut_between({leader});
      detail = fmt::format(",\"isolated\":{},\"leader\":{}", JsonString(leader),
                           was_leader ? "true" : "false");
    } else if (variant == "majority") {
      std::vector<std::string> coords = cluster->Coordinators();
      std::optional<std::string> leader = cluster->Leader(500ms);
      std::shuffle(coords.begin(), coords.end(), rng);
      const size_t minority_size = (coords.size() - 1) / 2;
      // Half the time the leader is on the minority side (it must step down).
      if (leader.has_value() && std::uniform_int_distribution<int>(0, 1)(rng) == 1) {
        std::iter_swap(coords.begin(), std::find(coords.begin(), coords.end(), *leader));
      }
      std::set<std::string> minority(coords.begin(), coords.begin() + minority_size);
      for (const std::string& p : cluster->Participants()) {
        if (std::uniform_int_distribution<int>(0, 2)(rng) == 0) minority.insert(p);
      }
      if (std::uniform_int_distribution<int>(0, 3)(rng) == 0) minority.insert(kClientNode);
      cut_between(minority);
      detail = fmt::format(",\"minority\":{}",
                           JsonNames(std::vector<std::string>(minority.begin(), minority.end())));
    } else if (variant == "one-way") {
      std::optional<std::string> leader = cluster->Leader(500ms);
      const int shape = std::uniform_int_distribution<int>(0, 2)(rng);
      if (leader.has_value() && shape == 0) {  // the leader cannot send
        for (const auto& l : all) {
          if (l.first == *leader) links.push_back(l);
        }
        detail = fmt::format(",\"shape\":\"leader-cannot-send\",\"leader_node\":{}",
                             JsonString(*leader));
      } else if (leader.has_value() && shape == 1) {  // the leader cannot receive
        for (const auto& l : all) {
          if (l.second == *leader) links.push_back(l);
        }
        detail = fmt::format(",\"shape\":\"leader-cannot-receive\",\"leader_node\":{}",
                             JsonString(*leader));
      } else {
        links.push_back(Pick(all, rng));
        detail = ",\"shape\":\"one-link\"";
      }
    } else if (variant == "participant-cut") {
      const std::string p = Pick(cluster->Participants(), rng);
      for (const auto& l : all) {
        if ((l.first == p && IsCoordinator(l.second)) ||
            (l.second == p && IsCoordinator(l.first))) {
          links.push_back(l);
        }
      }
      detail = fmt::format(",\"participant\":{}", JsonString(p));
    } else if (variant == "client-cut") {
      const std::string leader = PickLeaderOrAny(rng, &was_leader);
      if (leader.empty()) return skipped("no coordinator running");
      links.push_back({kClientNode, leader});
      detail = fmt::format(",\"leader_node\":{}", JsonString(leader));
    } else {
      return skipped("unknown partition variant");
    }
  } else if (action == "flaky") {
    const bool all_links = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
    for (const auto& l : all) {
      if (all_links || std::uniform_int_distribution<int>(0, 1)(rng) == 1) links.push_back(l);
    }
    if (variant == "drop" || variant == "all") {
      faults.drop_probability = UniformReal(rng, 0.005, variant == "all" ? 0.02 : 0.05);
    }
    if (variant == "delay" || variant == "all") {
      faults.delay_min = std::chrono::milliseconds(0);
      faults.delay_max = std::chrono::milliseconds(
          std::uniform_int_distribution<int64_t>(5, variant == "all" ? 20 : 60)(rng));
    }
    if (variant == "dup" || variant == "all") {
      faults.duplicate_probability = UniformReal(rng, 0.05, variant == "all" ? 0.1 : 0.3);
      faults.duplicate_after =
          std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(1, 200)(rng));
    }
    if (!faults.any()) return skipped("unknown flaky variant");
    detail = fmt::format(",\"faults\":{}", JsonString(faults.ToString()));
  } else {
    return skipped("unknown action");
  }
  if (links.empty()) return skipped("no link fits");
  SetLinks(links, faults);
  Event(fmt::format("{},\"action\":{}{},\"links\":{}", base, JsonString(action), detail,
                    JsonLinks(links)));
  ran();
  Schedule(undo_at, true, [this, links, action] {
    SetLinks(links, LinkFaults());
    Event(fmt::format("\"action\":\"heal-links\",\"of\":{},\"links\":{}", JsonString(action),
                      links.size()));
  });
}

}  // namespace tx::chaos
