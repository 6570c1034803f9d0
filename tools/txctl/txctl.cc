// txctl: the operator's command line for a txcoord cluster.
//
//   txctl --coordinators 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 status
//   txctl txns [--all]             live and in-doubt transactions on the leader
//   txctl txn TXID                 one transaction, with its state at each participant
//   txctl participants             the participant directory
//   txctl register NAME HOST:PORT  add or move a participant in the directory
//   txctl leader [--wait S] [--not ID]   print "ID HOST:PORT" of the leader (for scripts)
//   txctl wait-replica ID [--timeout S]  wait until a (restarted) replica has caught up
//
// --coordinators may also come from $TX_COORDINATORS. --json prints JSON instead of tables
// (status, txns, txn, participants). Exit status: 0 success, 1 the cluster could not answer
// (every replica unreachable, no leader, a timeout: the message says which), 2 bad usage.

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <future>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "CoordinatorService.h"
#include "ParticipantService.h"
#include "client/coordinator_channel.h"
#include "client/endpoint_call.h"
#include "common/net.h"
#include "common/rpc/thrift_logging.h"
#include "tools/txctl/output.h"

namespace tx::txctl {
namespace {

using client::internal::CallResult;
using client::internal::CoordinatorChannel;
using client::internal::ErrorCodeName;
using client::internal::Millis;
using client::internal::SteadyTime;
using Clock = std::chrono::steady_clock;

// Bounds the replicas txctl asks about: the configured ones plus those their answers name.
constexpr size_t kMaxReplicas = 16;
// Bounds the transactions `txns` fetches (pages of 1,000), so a huge backlog cannot make txctl
// use unbounded memory; the output says when it stopped early.
constexpr int kMaxListedTransactions = 100'000;

struct Globals {
  std::string coordinators;
  bool json = false;
  int timeout_ms = 3000;  // per call, and the deadline of calls that retry
};

template <typename Map, typename E>
std::string EnumName(const Map& names, E value) {
  auto it = names.find(static_cast<int>(value));
  return it == names.end() ? fmt::format("?{}", static_cast<int>(value)) : it->second;
}

std::string PhaseName(api::TransactionPhase::type p) {
  return EnumName(api::_TransactionPhase_VALUES_TO_NAMES, p);
}
std::string DecisionName(api::Decision::type d) {
  return EnumName(api::_Decision_VALUES_TO_NAMES, d);
}
std::string VoteName(api::ParticipantVote::type v) {
  return EnumName(api::_ParticipantVote_VALUES_TO_NAMES, v);
}
std::string ProtocolName(api::Protocol::type p) {
  return EnumName(api::_Protocol_VALUES_TO_NAMES, p);
}
std::string TxStateName(api::TxState::type s) { return EnumName(api::_TxState_VALUES_TO_NAMES, s); }
// For the txns table: "2PC", "3PC".
std::string ProtocolShortName(api::Protocol::type p) {
  switch (static_cast<int>(p)) {
    case api::Protocol::TWO_PHASE:
      return "2PC";
    case api::Protocol::THREE_PHASE:
      return "3PC";
    default:
      return ProtocolName(p);
  }
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "txctl: %s\n", message.c_str());
  return 1;
}

class Cluster {
 public:
  static StatusOr<std::unique_ptr<Cluster>> Connect(const Globals& g) {
    if (g.coordinators.empty()) {
      return Status::InvalidArgument(
          "no coordinators: give --coordinators HOST:PORT,... or set TX_COORDINATORS");
    }
    StatusOr<std::vector<HostPort>> endpoints = ParseHostPortList(g.coordinators);
    if (!endpoints.ok()) return endpoints.status().Annotate("--coordinators");
    if (endpoints->size() > kMaxReplicas) {
      return Status::InvalidArgument(fmt::format("more than {} coordinators", kMaxReplicas));
    }
    return std::unique_ptr<Cluster>(new Cluster(*std::move(endpoints), g));
  }

  CoordinatorChannel& channel() { return channel_; }
  Millis timeout() const { return timeout_; }
  SteadyTime Deadline() const { return Clock::now() + timeout_; }

  struct ReplicaAnswer {
    HostPort address;
    std::optional<api::ClusterStatusResponse> status;
    std::string error;  // when status is empty
  };

  // GetClusterStatus from every configured replica and every replica their answers name.
  std::vector<ReplicaAnswer> AskAll() {
    std::vector<HostPort> to_ask = configured_;
    std::set<HostPort> asked;
    std::vector<ReplicaAnswer> out;
    for (size_t i = 0; i < to_ask.size() && out.size() < kMaxReplicas; ++i) {
      if (!asked.insert(to_ask[i]).second) continue;
      ReplicaAnswer a;
      a.address = to_ask[i];
      api::ClusterStatusResponse s;
      CallResult r = channel_.CallReplica(
          to_ask[i],
          [&](api::CoordinatorServiceClient& c) {
            c.GetClusterStatus(s, api::ClusterStatusRequest());
          },
          timeout_);
      if (r.ok()) {
        for (const api::ReplicaStatus& rs : s.replicas) {
          StatusOr<HostPort> hp = ParseHostPort(rs.address);
          if (hp.ok() && hp->port != 0) to_ask.push_back(*hp);
        }
        a.status = std::move(s);
      } else {
        a.error = r.Describe();
      }
      out.push_back(std::move(a));
    }
    return out;
  }

  // The answer of the replica that says it leads (the highest term if several do).
  static const ReplicaAnswer* Leader(const std::vector<ReplicaAnswer>& answers) {
    const ReplicaAnswer* best = nullptr;
    for (const ReplicaAnswer& a : answers) {
      if (a.status && a.status->role == "leader" &&
          (best == nullptr || a.status->term > best->status->term)) {
        best = &a;
      }
    }
    return best;
  }

  static std::string Unreachable(const std::vector<ReplicaAnswer>& answers) {
    std::string out = "no coordinator answered:";
    for (const ReplicaAnswer& a : answers) out += fmt::format("\n  {}: {}", a.address, a.error);
    return out;
  }

 private:
  Cluster(std::vector<HostPort> endpoints, const Globals& g)
      : configured_(endpoints), timeout_(g.timeout_ms), channel_(std::move(endpoints), [&] {
          client::internal::ChannelOptions o;
          o.connect_timeout = Millis(std::min(g.timeout_ms, 1000));
          o.rpc_timeout = Millis(g.timeout_ms);
          o.retry_initial = Millis(20);
          o.retry_max = Millis(200);
          o.max_connections_per_server = 4;
          return o;
        }()) {}

  const std::vector<HostPort> configured_;
  const Millis timeout_;
  CoordinatorChannel channel_;
};

// ---------------------------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------------------------

int ShowStatus(Cluster& cluster, const Globals& g) {
  std::vector<Cluster::ReplicaAnswer> answers = cluster.AskAll();
  bool any = false;
  for (const auto& a : answers) any = any || a.status.has_value();
  if (!any) return Fail(Cluster::Unreachable(answers));
  const Cluster::ReplicaAnswer* leader = Cluster::Leader(answers);
  // The leader's view (match indexes, participants, transactions) when there is one, else the
  // freshest answer.
  const api::ClusterStatusResponse* view = leader ? &*leader->status : nullptr;
  if (view == nullptr) {
    for (const auto& a : answers) {
      if (a.status && (view == nullptr || a.status->applied_index > view->applied_index)) {
        view = &*a.status;
      }
    }
  }
  std::map<int64_t, int64_t> match;
  if (leader != nullptr) {
    for (const api::ReplicaStatus& r : leader->status->replicas) match[r.id] = r.match_index;
  }

  if (g.json) {
    JsonWriter j;
    j.BeginObject();
    j.Key("leader");
    if (leader) {
      j.BeginObject()
          .Key("id")
          .Int(leader->status->replica_id)
          .Key("address")
          .String(ToString(leader->address))
          .Key("term")
          .Int(leader->status->term)
          .Key("commit_index")
          .Int(leader->status->commit_index)
          .EndObject();
    } else {
      j.Null();
    }
    j.Key("replicas").BeginArray();
    for (const auto& a : answers) {
      j.BeginObject().Key("address").String(ToString(a.address));
      if (a.status) {
        const auto& s = *a.status;
        j.Key("id").Int(s.replica_id).Key("role").String(s.role).Key("term").Int(s.term);
        j.Key("leader_id").Int(s.leader_id).Key("commit_index").Int(s.commit_index);
        j.Key("applied_index").Int(s.applied_index).Key("health").String(s.health);
        if (auto it = match.find(s.replica_id); it != match.end()) {
          j.Key("match_index").Int(it->second);
        }
      } else {
        j.Key("error").String(a.error);
      }
      j.EndObject();
    }
    j.EndArray();
    j.Key("directory_version").Int(view->directory_version);
    j.Key("participants").BeginArray();
    for (const auto& p : view->participants) {
      j.BeginObject().Key("name").String(p.name).Key("address").String(p.address).EndObject();
    }
    j.EndArray();
    j.Key("decided_transactions").Int(view->decided_transactions);
    j.Key("active_transactions").Int(leader ? view->active_transactions : 0);
    j.Key("next_txid").Int(view->next_txid);
    j.EndObject();
    std::printf("%s\n", j.Take().c_str());
    return 0;
  }

  if (leader != nullptr) {
    std::printf("leader: replica %lld at %s, term %lld, commit index %lld\n",
                static_cast<long long>(leader->status->replica_id),
                ToString(leader->address).c_str(), static_cast<long long>(leader->status->term),
                static_cast<long long>(leader->status->commit_index));
  } else {
    std::printf("leader: none known (an election may be in progress, or no majority is up)\n");
  }
  std::printf("\n");
  Table replicas({"REPLICA", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED",
                  "MATCH(leader's view)", "HEALTH"});
  for (const auto& a : answers) {
    if (!a.status) {
      replicas.Add({"?", ToString(a.address), "unreachable", "", "", "", "", "", a.error});
      continue;
    }
    const auto& s = *a.status;
    auto it = match.find(s.replica_id);
    replicas.Add({std::to_string(s.replica_id), ToString(a.address), s.role, std::to_string(s.term),
                  s.leader_id ? std::to_string(s.leader_id) : "-", std::to_string(s.commit_index),
                  std::to_string(s.applied_index),
                  it == match.end() ? "" : std::to_string(it->second), s.health});
  }
  // Replicas the leader knows but nobody could reach (and that were not configured here).
  if (leader != nullptr) {
    for (const api::ReplicaStatus& r : leader->status->replicas) {
      bool listed = false;
      for (const auto& a : answers) listed = listed || ToString(a.address) == r.address;
      if (!listed) {
        replicas.Add({std::to_string(r.id), r.address, "not asked", "", "", "", "",
                      std::to_string(r.match_index), ""});
      }
    }
  }
  std::printf("%s\n", replicas.Render().c_str());
  std::printf("participants (directory version %lld):\n",
              static_cast<long long>(view->directory_version));
  if (view->participants.empty()) {
    std::printf("  none registered (txctl register NAME HOST:PORT)\n");
  } else {
    Table parts({"  NAME", "ADDRESS"});
    for (const auto& p : view->participants) parts.Add({"  " + p.name, p.address});
    std::printf("%s", parts.Render().c_str());
  }
  std::printf("\ntransactions: %lld decided and not finished (phase two pending)",
              static_cast<long long>(view->decided_transactions));
  if (leader != nullptr) {
    std::printf(", %lld in progress on the leader",
                static_cast<long long>(view->active_transactions));
  }
  std::printf("; next txid %lld\n", static_cast<long long>(view->next_txid));
  return 0;
}

// ---------------------------------------------------------------------------------------------
// txns, txn
// ---------------------------------------------------------------------------------------------

void TransactionJson(JsonWriter& j, const api::TransactionView& v) {
  j.BeginObject();
  j.Key("txid").Int(v.txid).Key("protocol").String(ProtocolName(v.protocol));
  j.Key("phase").String(PhaseName(v.phase));
  j.Key("decision");
  if (v.__isset.decision) {
    j.String(DecisionName(v.decision));
  } else {
    j.Null();
  }
  if (v.__isset.reason_code) j.Key("reason_code").String(ErrorCodeName(v.reason_code));
  if (v.__isset.reason) j.Key("reason").String(v.reason);
  j.Key("age_ms").Int(v.age_ms).Key("decided_unix_ms").Int(v.decided_unix_ms);
  j.Key("decided_index").Int(v.decided_index);
  j.Key("participants").BeginArray();
  for (const auto& p : v.participants) {
    j.BeginObject().Key("name").String(p.name).Key("address").String(p.address);
    j.Key("vote").String(VoteName(p.vote)).Key("waiting").Bool(p.waiting);
    j.Key("acknowledged").Bool(p.acknowledged).Key("attempts").Int(p.attempts);
    if (p.__isset.last_error) j.Key("last_error").String(p.last_error);
    j.EndObject();
  }
  j.EndArray();
  j.EndObject();
}

std::string WaitingOn(const api::TransactionView& v) {
  std::string out;
  for (const auto& p : v.participants) {
    if (!p.waiting) continue;
    if (!out.empty()) out += ", ";
    out += fmt::format("{} ({} attempt(s){})", p.name, p.attempts,
                       p.__isset.last_error ? ": " + p.last_error : "");
  }
  return out.empty() ? "-" : out;
}

int Txns(Cluster& cluster, const Globals& g, bool include_begun) {
  std::vector<api::TransactionView> listed;
  std::optional<int64_t> after;
  bool truncated = false;
  while (true) {
    api::ListTransactionsRequest req;
    req.include_begun = include_begun;
    req.limit = 1000;
    if (after) req.__set_after_txid(*after);
    api::ListTransactionsResponse resp;
    CallResult r = cluster.channel().Call(
        "ListTransactions",
        [&](api::CoordinatorServiceClient& c) { c.ListTransactions(resp, req); },
        cluster.Deadline());
    if (!r.ok()) return Fail(r.Describe());
    for (auto& v : resp.transactions) listed.push_back(std::move(v));
    if (!resp.more || resp.transactions.empty()) break;
    if (static_cast<int>(listed.size()) >= kMaxListedTransactions) {
      truncated = true;
      break;
    }
    after = listed.back().txid;
  }
  if (g.json) {
    JsonWriter j;
    j.BeginObject().Key("transactions").BeginArray();
    for (const auto& v : listed) TransactionJson(j, v);
    j.EndArray().Key("truncated").Bool(truncated).EndObject();
    std::printf("%s\n", j.Take().c_str());
    return 0;
  }
  if (listed.empty()) {
    std::printf("no transactions in progress or in doubt%s\n",
                include_begun ? "" : " (--all also lists begun ones without a Commit yet)");
    return 0;
  }
  Table t({"TXID", "PROTOCOL", "PHASE", "DECISION", "AGE", "VOTES", "WAITING ON"});
  for (const auto& v : listed) {
    std::string votes;
    for (const auto& p : v.participants) {
      if (!votes.empty()) votes += " ";
      votes += fmt::format("{}={}{}", p.name, VoteName(p.vote), p.acknowledged ? "(acked)" : "");
    }
    t.Add({std::to_string(v.txid), ProtocolShortName(v.protocol), PhaseName(v.phase),
           v.__isset.decision ? DecisionName(v.decision) : "-", FormatAge(v.age_ms),
           votes.empty() ? "-" : votes, WaitingOn(v)});
  }
  std::printf("%s", t.Render().c_str());
  if (truncated) std::printf("(stopped after %d transactions)\n", kMaxListedTransactions);
  return 0;
}

// The transaction's state at one participant, asked directly (ParticipantService.Status).
std::string StateAt(const std::string& address, int64_t txid, Millis timeout) {
  StatusOr<HostPort> hp = ParseHostPort(address);
  if (!hp.ok()) return "bad address";
  rpc::RpcClientOptions o;
  o.connect_timeout = std::min(timeout, Millis(1000));
  o.recv_timeout = timeout;
  client::internal::ServerPools<api::ParticipantServiceClient> pools(o);
  api::TransactionStatus st;
  std::optional<api::TxError> error;
  bool maybe_sent = false;
  tx::Status s = pools.Call(
      *hp, timeout,
      [&](api::ParticipantServiceClient& c) {
        try {
          api::StatusRequest req;
          req.txid = txid;
          c.Status(st, req);
        } catch (const api::TxError& e) {
          error = e;
        }
      },
      &maybe_sent);
  if (!s.ok()) return "unreachable: " + s.message();
  if (error) return ErrorCodeName(error->code) + ": " + error->message;
  std::string out = TxStateName(st.state);
  if (st.in_termination) out += " (in a 3PC termination round)";
  if (st.state_age_ms > 0) out += " for " + FormatAge(st.state_age_ms);
  if (st.locks_held > 0) out += fmt::format(", {} lock(s)", st.locks_held);
  if (st.__isset.abort_reason) out += ", " + st.abort_reason;
  return out;
}

int Txn(Cluster& cluster, const Globals& g, int64_t txid) {
  api::GetTransactionRequest req;
  req.txid = txid;
  api::TransactionView v;
  CallResult r = cluster.channel().Call(
      "GetTransaction", [&](api::CoordinatorServiceClient& c) { c.GetTransaction(v, req); },
      cluster.Deadline());
  if (!r.answered()) return Fail(r.Describe());
  if (r.error) {
    if (r.error->code != api::ErrorCode::UNKNOWN_TRANSACTION) return Fail(r.Describe());
    // Not live on the leader: the log may still remember the outcome.
    api::GetOutcomeRequest q;
    q.txid = txid;
    api::GetOutcomeResponse o;
    CallResult rr = cluster.channel().Call(
        "GetOutcome", [&](api::CoordinatorServiceClient& c) { c.GetOutcome(o, q); },
        cluster.Deadline());
    std::string outcome = rr.ok() ? DecisionName(o.decision) : rr.Describe();
    if (g.json) {
      JsonWriter j;
      j.BeginObject().Key("txid").Int(txid).Key("live").Bool(false).Key("outcome").String(outcome);
      j.EndObject();
      std::printf("%s\n", j.Take().c_str());
    } else {
      std::printf("txid %lld is not in progress on the leader; outcome in the log: %s\n",
                  static_cast<long long>(txid), outcome.c_str());
    }
    return 0;
  }
  const int64_t answered_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count();
  // Ask the participants in parallel: one that is down costs one timeout, not one each.
  std::vector<std::future<std::string>> asking;
  for (const auto& p : v.participants) {
    asking.push_back(std::async(std::launch::async, StateAt, p.address, txid, cluster.timeout()));
  }
  std::vector<std::string> states;
  for (auto& f : asking) states.push_back(f.get());
  if (g.json) {
    JsonWriter j;
    j.BeginObject().Key("transaction");
    TransactionJson(j, v);
    j.Key("state_at_participants").BeginObject();
    for (size_t i = 0; i < v.participants.size(); ++i) {
      j.Key(v.participants[i].name).String(states[i]);
    }
    j.EndObject().EndObject();
    std::printf("%s\n", j.Take().c_str());
    return 0;
  }
  std::printf("txid %lld: %s, %s, decision %s, age %s\n", static_cast<long long>(v.txid),
              ProtocolName(v.protocol).c_str(), PhaseName(v.phase).c_str(),
              v.__isset.decision ? DecisionName(v.decision).c_str() : "none yet",
              FormatAge(v.age_ms).c_str());
  if (v.__isset.reason) {
    std::printf("reason: %s%s\n", v.reason.c_str(),
                v.__isset.reason_code ? (" (" + ErrorCodeName(v.reason_code) + ")").c_str() : "");
  }
  if (v.decided_index > 0) {
    std::printf("decided at log index %lld, %s before the leader answered\n",
                static_cast<long long>(v.decided_index),
                FormatAge(answered_unix_ms - v.decided_unix_ms).c_str());
  }
  Table t({"PARTICIPANT", "ADDRESS", "VOTE", "WAITING", "ACKED", "ATTEMPTS", "LAST ERROR",
           "STATE THERE"});
  for (size_t i = 0; i < v.participants.size(); ++i) {
    const auto& p = v.participants[i];
    t.Add({p.name, p.address, VoteName(p.vote), p.waiting ? "yes" : "no",
           p.acknowledged ? "yes" : "no", std::to_string(p.attempts),
           p.__isset.last_error ? p.last_error : "-", states[i]});
  }
  std::printf("\n%s", t.Render().c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------------
// participants, register
// ---------------------------------------------------------------------------------------------

int Participants(Cluster& cluster, const Globals& g) {
  api::GetDirectoryResponse d;
  CallResult r = cluster.channel().Call(
      "GetDirectory",
      [&](api::CoordinatorServiceClient& c) { c.GetDirectory(d, api::GetDirectoryRequest()); },
      cluster.Deadline());
  if (!r.ok()) return Fail(r.Describe());
  if (g.json) {
    JsonWriter j;
    j.BeginObject().Key("directory_version").Int(d.directory_version).Key("participants");
    j.BeginArray();
    for (const auto& p : d.participants) {
      j.BeginObject().Key("name").String(p.name).Key("address").String(p.address).EndObject();
    }
    j.EndArray().EndObject();
    std::printf("%s\n", j.Take().c_str());
    return 0;
  }
  Table t({"NAME", "ADDRESS"});
  for (const auto& p : d.participants) t.Add({p.name, p.address});
  std::printf("directory version %lld\n%s", static_cast<long long>(d.directory_version),
              t.Render().c_str());
  return 0;
}

int Register(Cluster& cluster, const std::string& name, const std::string& address) {
  api::RegisterParticipantRequest req;
  req.participant.name = name;
  req.participant.address = address;
  api::RegisterParticipantResponse resp;
  CallResult r = cluster.channel().Call(
      "RegisterParticipant",
      [&](api::CoordinatorServiceClient& c) { c.RegisterParticipant(resp, req); },
      cluster.Deadline());
  if (!r.ok()) return Fail(r.Describe());
  std::printf("registered %s at %s (directory version %lld)\n", name.c_str(), address.c_str(),
              static_cast<long long>(resp.directory_version));
  return 0;
}

// ---------------------------------------------------------------------------------------------
// leader, wait-replica (for scripts)
// ---------------------------------------------------------------------------------------------

constexpr Millis kPollInterval{50};

int Leader(Cluster& cluster, double wait_s, int64_t not_id) {
  const SteadyTime until =
      Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(wait_s * 1000));
  while (true) {
    std::vector<Cluster::ReplicaAnswer> answers = cluster.AskAll();
    const Cluster::ReplicaAnswer* leader = Cluster::Leader(answers);
    if (leader != nullptr && leader->status->replica_id != not_id) {
      std::printf("%lld %s\n", static_cast<long long>(leader->status->replica_id),
                  ToString(leader->address).c_str());
      return 0;
    }
    if (Clock::now() >= until) {
      bool any = false;
      for (const auto& a : answers) any = any || a.status.has_value();
      if (!any) return Fail(Cluster::Unreachable(answers));
      return Fail(leader != nullptr
                      ? fmt::format("replica {} still leads", not_id)
                      : fmt::format("no leader{}", wait_s > 0 ? " within the wait" : ""));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

int WaitReplica(Cluster& cluster, int64_t id, double timeout_s) {
  const auto start = Clock::now();
  const SteadyTime until =
      start + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  int64_t target_index = -1;  // the leader's commit index when first seen
  std::string last = "no answer yet";
  while (Clock::now() < until) {
    std::vector<Cluster::ReplicaAnswer> answers = cluster.AskAll();
    const Cluster::ReplicaAnswer* leader = Cluster::Leader(answers);
    const Cluster::ReplicaAnswer* replica = nullptr;
    for (const auto& a : answers) {
      if (a.status && a.status->replica_id == id) replica = &a;
    }
    if (leader != nullptr && target_index < 0) target_index = leader->status->commit_index;
    if (replica == nullptr) {
      last = fmt::format("replica {} does not answer", id);
    } else if (leader == nullptr) {
      last = "no leader";
    } else {
      const auto& s = *replica->status;
      last = fmt::format("replica {} is {} in term {}, applied index {} (target {})", id, s.role,
                         s.term, s.applied_index, target_index);
      if ((s.role == "follower" || s.role == "leader") && s.term == leader->status->term &&
          s.applied_index >= target_index) {
        std::printf(
            "replica %lld is %s in term %lld with applied index %lld (the leader's commit "
            "index was %lld when we started waiting), after %.1f s\n",
            static_cast<long long>(id), s.role.c_str(), static_cast<long long>(s.term),
            static_cast<long long>(s.applied_index), static_cast<long long>(target_index),
            std::chrono::duration<double>(Clock::now() - start).count());
        return 0;
      }
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  return Fail(
      fmt::format("replica {} did not catch up within {} s; last: {}", id, timeout_s, last));
}

}  // namespace
}  // namespace tx::txctl

int main(int argc, char** argv) {
  using namespace tx::txctl;
  Globals g;
  CLI::App app{"txctl: operate a txcoord cluster (status, transactions, participants)."};
  app.require_subcommand(1);
  app.add_option("--coordinators", g.coordinators, "HOST:PORT,... of coordinator replicas")
      ->envname("TX_COORDINATORS");
  app.add_flag("--json", g.json, "print JSON instead of tables");
  app.add_option("--timeout-ms", g.timeout_ms, "per-call timeout and retry deadline")
      ->check(CLI::Range(10, 600'000));

  auto* status = app.add_subcommand("status", "replicas, leader, term, commit index, participants");
  bool all = false;
  auto* txns = app.add_subcommand("txns", "live and in-doubt transactions on the leader");
  txns->add_flag("--all", all, "also transactions begun but not yet committing");
  int64_t txid = 0;
  auto* txn = app.add_subcommand("txn", "one transaction, with its state at each participant");
  txn->add_option("TXID", txid, "the transaction id")
      ->required()
      ->check(CLI::Range(int64_t{1}, std::numeric_limits<int64_t>::max()));
  auto* participants = app.add_subcommand("participants", "the participant directory");
  std::string name, address;
  auto* reg = app.add_subcommand("register", "add or move a participant in the directory");
  reg->add_option("NAME", name, "participant name")->required();
  reg->add_option("ADDRESS", address, "HOST:PORT it serves on")->required();
  double wait_s = 0;
  int64_t not_id = 0;
  auto* leader = app.add_subcommand("leader", "print the leader as 'ID HOST:PORT'");
  leader->add_option("--wait", wait_s, "seconds to wait for a leader")
      ->check(CLI::Range(0.0, 3600.0));
  leader->add_option("--not", not_id, "wait for a leader other than this replica id");
  int64_t replica_id = 0;
  double replica_timeout_s = 30;
  auto* wait_replica =
      app.add_subcommand("wait-replica", "wait until a replica follows the leader, caught up");
  wait_replica->add_option("ID", replica_id, "replica id")->required();
  wait_replica->add_option("--timeout", replica_timeout_s, "seconds")
      ->check(CLI::Range(0.0, 3600.0));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is a "parse error" that exits 0; every real one is bad usage (2).
    return app.exit(e) == 0 ? 0 : 2;
  }

  tx::rpc::RouteThriftLoggingToSpdlog();
  tx::StatusOr<std::unique_ptr<Cluster>> cluster = Cluster::Connect(g);
  if (!cluster.ok()) {
    std::fprintf(stderr, "txctl: %s\n", cluster.status().ToString().c_str());
    return 2;
  }
  Cluster& c = **cluster;
  if (*status) return ShowStatus(c, g);
  if (*txns) return Txns(c, g, all);
  if (*txn) return Txn(c, g, txid);
  if (*participants) return Participants(c, g);
  if (*reg) return Register(c, name, address);
  if (*leader) return Leader(c, wait_s, not_id);
  if (*wait_replica) return WaitReplica(c, replica_id, replica_timeout_s);
  return 2;
}
