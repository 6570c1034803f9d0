#include "raft/node/example/example_client.h"

#include <fmt/format.h>
#include <thrift/protocol/TMultiplexedProtocol.h>

#include <thread>

namespace tx::raft::example {

MultiplexedExampleClient::MultiplexedExampleClient(
    std::shared_ptr<apache::thrift::protocol::TProtocol> protocol)
    : RaftExampleClient(
          std::make_shared<apache::thrift::protocol::TMultiplexedProtocol>(protocol, "example")) {}

ExampleClusterClient::ExampleClusterClient(std::map<uint64_t, HostPort> replicas,
                                           rpc::RpcClientOptions options)
    : replicas_(std::move(replicas)) {
  for (const auto& [id, hp] : replicas_) pools_[id] = std::make_unique<Pool>(hp, options);
}

ProposeOutcome ExampleClusterClient::Propose(const std::string& item,
                                             std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  ProposeOutcome out;
  uint64_t target = leader_hint_.load();
  auto next_replica = [&](uint64_t after) {
    auto it = replicas_.upper_bound(after);
    return it == replicas_.end() ? replicas_.begin()->first : it->first;
  };
  if (target == 0 || replicas_.count(target) == 0) target = replicas_.begin()->first;
  while (std::chrono::steady_clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    int32_t call_timeout = static_cast<int32_t>(std::max<int64_t>(1, left.count()));
    raft_example::ProposeResponse resp;
    raft_example::ExampleError error;
    bool has_error = false;
    bool sent = false;
    Status s = PoolFor(target)->Call(
        [&](MultiplexedExampleClient& c) {
          try {
            c.Propose(resp, item, call_timeout);
          } catch (const raft_example::ExampleError& e) {
            error = e;
            has_error = true;
          }
        },
        &sent);
    if (s.ok() && !has_error) {
      leader_hint_.store(target);
      out.status = Status::OK();
      out.maybe_committed = true;
      out.leader = target;
      out.index = resp.index;
      out.position = resp.position;
      out.checksum = resp.checksum;
      return out;
    }
    if (s.ok() && has_error && error.not_leader) {
      // A definite refusal: the item is not in the log; go where the replica points.
      out.status = Status::Unavailable(error.message);
      uint64_t hint = static_cast<uint64_t>(error.leader_id);
      target = hint != 0 && replicas_.count(hint) != 0 ? hint : next_replica(target);
      if (hint == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // election
      continue;
    }
    if (!s.ok() && !sent) {
      // Never reached the replica (down, or in connect back-off): try the next one.
      out.status = s;
      target = next_replica(target);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    // The request reached a server and the outcome is unknown (timeout, connection lost,
    // or an error after the proposal entered the log): never re-send it.
    out.status = s.ok() ? Status(static_cast<Status::Code>(error.code), error.message) : s;
    out.maybe_committed = true;
    leader_hint_.store(0);
    return out;
  }
  if (out.status.ok()) out.status = Status::TimedOut("no leader accepted the proposal in time");
  return out;
}

std::vector<ProposeOutcome> ExampleClusterClient::ProposeMany(const std::vector<std::string>& items,
                                                              std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<ProposeOutcome> out(items.size());
  std::vector<size_t> pending(items.size());  // indices of items not yet answered for
  for (size_t i = 0; i < pending.size(); ++i) pending[i] = i;
  uint64_t target = leader_hint_.load();
  auto next_replica = [&](uint64_t after) {
    auto it = replicas_.upper_bound(after);
    return it == replicas_.end() ? replicas_.begin()->first : it->first;
  };
  if (target == 0 || replicas_.count(target) == 0) target = replicas_.begin()->first;
  std::vector<std::string> request;
  while (!pending.empty() && std::chrono::steady_clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    int32_t call_timeout = static_cast<int32_t>(std::max<int64_t>(1, left.count()));
    request.clear();
    for (size_t i : pending) request.push_back(items[i]);
    std::vector<raft_example::ProposeItemResult> results;
    raft_example::ExampleError error;
    bool has_error = false;
    bool sent = false;
    Status s = PoolFor(target)->Call(
        [&](MultiplexedExampleClient& c) {
          try {
            c.ProposeMany(results, request, call_timeout);
          } catch (const raft_example::ExampleError& e) {
            error = e;
            has_error = true;
          }
        },
        &sent);
    if (!s.ok() && !sent) {
      // Never reached the replica (down, or in connect back-off): try the next one.
      for (size_t i : pending) out[i].status = s;
      target = next_replica(target);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    if (s.ok() && has_error) {
      // The whole call was refused before any item was proposed (bad arguments).
      for (size_t i : pending) {
        out[i].status = Status(static_cast<Status::Code>(error.code), error.message);
      }
      return out;
    }
    if (!s.ok() || results.size() != pending.size()) {
      // The request reached a server and the outcome of every item is unknown: never re-send.
      Status failed = !s.ok() ? s
                              : Status::Internal(fmt::format("{} results for {} items",
                                                             results.size(), pending.size()));
      for (size_t i : pending) {
        out[i].status = failed;
        out[i].maybe_committed = true;
      }
      leader_hint_.store(0);
      return out;
    }
    std::vector<size_t> refused;  // not the leader: never entered the log
    uint64_t hint = 0;
    for (size_t k = 0; k < pending.size(); ++k) {
      const raft_example::ProposeItemResult& r = results[k];
      ProposeOutcome& o = out[pending[k]];
      if (r.not_leader) {
        o.status = Status::Unavailable(r.message);
        refused.push_back(pending[k]);
        hint = static_cast<uint64_t>(r.leader_id);
        continue;
      }
      o.leader = target;
      o.maybe_committed = true;
      if (r.code == 0) {
        o.status = Status::OK();
        o.index = r.index;
        o.position = r.position;
        o.checksum = r.checksum;
      } else {
        // Codes come from the server's tx::Status; an unknown one is reported, not trusted.
        o.status = r.code > 0 && r.code <= static_cast<int32_t>(Status::Code::kCancelled)
                       ? Status(static_cast<Status::Code>(r.code), r.message)
                       : Status::Internal(fmt::format("code {}: {}", r.code, r.message));
      }
    }
    if (refused.size() < pending.size()) leader_hint_.store(target);
    pending = std::move(refused);
    if (!pending.empty()) {
      target = hint != 0 && replicas_.count(hint) != 0 ? hint : next_replica(target);
      if (hint == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // election
    }
  }
  for (size_t i : pending) {
    if (out[i].status.ok()) out[i].status = Status::TimedOut("no leader accepted the proposal");
  }
  return out;
}

StatusOr<raft_example::NodeInfo> ExampleClusterClient::Info(uint64_t id) {
  raft_example::NodeInfo info;
  TX_RETURN_IF_ERROR(PoolFor(id)->Call([&](MultiplexedExampleClient& c) { c.Info(info); }));
  return info;
}

StatusOr<raft_example::ReadResponse> ExampleClusterClient::ReadHead(uint64_t id) {
  raft_example::ReadResponse r;
  Status error;
  TX_RETURN_IF_ERROR(PoolFor(id)->Call([&](MultiplexedExampleClient& c) {
    try {
      c.Read(r, 0, 0, false);
    } catch (const raft_example::ExampleError& e) {
      error = Status(static_cast<Status::Code>(e.code), e.message);
    }
  }));
  TX_RETURN_IF_ERROR(error);
  return r;
}

StatusOr<std::vector<std::string>> ExampleClusterClient::ReadAll(uint64_t id, int64_t* checksum) {
  constexpr int32_t kPage = 5000;
  std::vector<std::string> items;
  for (;;) {
    raft_example::ReadResponse r;
    Status error;
    TX_RETURN_IF_ERROR(PoolFor(id)->Call([&](MultiplexedExampleClient& c) {
      try {
        c.Read(r, static_cast<int64_t>(items.size()), kPage, false);
      } catch (const raft_example::ExampleError& e) {
        error = Status(static_cast<Status::Code>(e.code), e.message);
      }
    }));
    TX_RETURN_IF_ERROR(error);
    if (items.empty()) *checksum = r.checksum;
    if (r.items.empty() || static_cast<int64_t>(items.size() + r.items.size()) > r.total) {
      if (static_cast<int64_t>(items.size()) != r.total || r.checksum != *checksum) {
        return Status::Unavailable(fmt::format("replica {} changed while being read", id));
      }
      return items;
    }
    for (std::string& s : r.items) items.push_back(std::move(s));
  }
}

Status ExampleClusterClient::TransferLeadership(uint64_t from, uint64_t to,
                                                std::chrono::milliseconds timeout) {
  Status error;
  TX_RETURN_IF_ERROR(PoolFor(from)->Call([&](MultiplexedExampleClient& c) {
    try {
      c.TransferLeadership(static_cast<int64_t>(to), static_cast<int32_t>(timeout.count()));
    } catch (const raft_example::ExampleError& e) {
      error = Status(static_cast<Status::Code>(e.code), e.message);
    }
  }));
  return error;
}

uint64_t ExampleClusterClient::FindLeader() {
  uint64_t leader = 0;
  for (const auto& [id, hp] : replicas_) {
    StatusOr<raft_example::NodeInfo> info = Info(id);
    if (!info.ok()) continue;  // down
    if (info->role == "leader") {
      if (leader != 0) return 0;  // two claim it (different terms): not settled yet
      leader = id;
    }
  }
  if (leader == 0) return 0;
  for (const auto& [id, hp] : replicas_) {
    StatusOr<raft_example::NodeInfo> info = Info(id);
    if (info.ok() && static_cast<uint64_t>(info->leader_id) != leader) return 0;
  }
  leader_hint_.store(leader);
  return leader;
}

}  // namespace tx::raft::example
