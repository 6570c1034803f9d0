// raft_example_server: one replica of a replicated append-only list (AppendLog) on a RaftNode.
// Used by the real-process Raft test and by `txbench raft`; also a small, complete example of
// embedding RaftNode.
//
//   raft_example_server --id 1 --listen 127.0.0.1:7001 --data-dir /tmp/r1
//       --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
//
// One port serves both RaftService ("raft") and the RaftExample control service ("example")
// through a TMultiplexedProcessor, the way txcoord shares its port. With --client-listen,
// RaftExample is also served alone on a second port by an EpollServer, where no call holds a
// thread while it waits for its commit (AsyncExampleService below; docs/raft.md, "Proposals and
// reads"): what txbench's proposers use. When serving, it prints "listening on HOST:PORT" (the
// Raft port) on stdout (for scripts and tests); logs go to stderr. SIGTERM or SIGINT stop it
// cleanly.

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <thrift/TApplicationException.h>
#include <thrift/TProcessor.h>
#include <thrift/processor/TMultiplexedProcessor.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include <CLI/CLI.hpp>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

#include "RaftExample.h"
#include "common/failpoint.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/metrics_http.h"
#include "common/net.h"
#include "common/rpc/server.h"
#include "common/rpc/thrift_logging.h"
#include "common/rpc/transport.h"
#include "common/shutdown.h"
#include "raft/node/example/append_log.h"
#include "raft/node/example/epoll_server.h"
#include "raft/node/node.h"

namespace {

using tx::raft::example::AppendLog;

// Bounds one Read reply (items are small; 10000 of them stay far below the frame limit).
constexpr int32_t kMaxReadItems = 10000;
// Bounds a caller-chosen timeout.
constexpr int32_t kMaxTimeoutMs = 60'000;
// Bounds one ProposeMany call, whose handler holds every item's result (and the node one
// pending proposal each) until the last is applied; the RPC frame limit bounds its bytes.
constexpr size_t kMaxProposeManyItems = 4096;

int Fail(const std::string& what, const tx::Status& s) {
  spdlog::critical("{}: {}", what, s.ToString());
  spdlog::shutdown();
  return 1;
}

[[noreturn]] void Throw(const tx::Status& s, const tx::raft::LeaderInfo* leader = nullptr) {
  tx::raft_example::ExampleError e;
  e.code = static_cast<int32_t>(s.code());
  e.message = s.message();
  if (leader != nullptr) {
    e.not_leader = true;
    e.leader_id = static_cast<int64_t>(leader->id);
    e.leader_address = leader->address.host.empty() ? "" : tx::ToString(leader->address);
  }
  throw e;
}

class ExampleHandler final : public tx::raft_example::RaftExampleIf {
 public:
  ExampleHandler(tx::raft::RaftNode* node, AppendLog* log) : node_(node), log_(log) {}

  void Propose(tx::raft_example::ProposeResponse& out, const std::string& item,
               int32_t timeout_ms) override {
    if (item.size() > tx::raft::example::kMaxItemBytes || timeout_ms <= 0 ||
        timeout_ms > kMaxTimeoutMs) {
      Throw(tx::Status::InvalidArgument(
          fmt::format("item of {} bytes (max {}) or timeout {} ms out of range", item.size(),
                      tx::raft::example::kMaxItemBytes, timeout_ms)));
    }
    tx::raft::ProposalResult r = node_->Propose(item, std::chrono::milliseconds(timeout_ms));
    if (!r.status.ok()) Throw(r.status, r.not_leader ? &r.leader : nullptr);
    tx::StatusOr<tx::raft::example::ApplyResult> applied =
        tx::raft::example::DecodeApplyResult(r.result);
    if (!applied.ok()) Throw(applied.status());
    out.index = static_cast<int64_t>(r.index);
    out.position = static_cast<int64_t>(applied->position);
    out.checksum = static_cast<int64_t>(applied->checksum);
  }

  void ProposeMany(std::vector<tx::raft_example::ProposeItemResult>& out,
                   const std::vector<std::string>& items, int32_t timeout_ms) override {
    if (items.size() > kMaxProposeManyItems || timeout_ms <= 0 || timeout_ms > kMaxTimeoutMs) {
      Throw(
          tx::Status::InvalidArgument(fmt::format("{} items (max {}) or timeout {} ms out of range",
                                                  items.size(), kMaxProposeManyItems, timeout_ms)));
    }
    out.assign(items.size(), {});
    // Every item is proposed before any is waited for, so they share the leader's batches.
    // The callbacks run on node threads; the last one wakes this handler.
    std::mutex mu;
    std::condition_variable cv;
    size_t left = items.size();  // GUARDED_BY(mu)
    const auto deadline = tx::Clock::Real()->Now() + std::chrono::milliseconds(timeout_ms);
    for (size_t i = 0; i < items.size(); ++i) {
      tx::raft_example::ProposeItemResult* slot = &out[i];
      if (items[i].size() > tx::raft::example::kMaxItemBytes) {
        slot->code = static_cast<int32_t>(tx::Status::Code::kInvalidArgument);
        slot->message = fmt::format("item of {} bytes (max {})", items[i].size(),
                                    tx::raft::example::kMaxItemBytes);
        std::lock_guard lock(mu);
        --left;
        continue;
      }
      node_->ProposeAsync(items[i], deadline, [&, slot](tx::raft::ProposalResult r) {
        Fill(r, slot);
        std::lock_guard lock(mu);
        if (--left == 0) cv.notify_one();
      });
    }
    std::unique_lock lock(mu);
    // Every proposal completes by its deadline (the node times it out), so this returns.
    cv.wait(lock, [&] { return left == 0; });
  }

  void Read(tx::raft_example::ReadResponse& out, int64_t offset, int32_t max_items,
            bool linearizable) override {
    if (offset < 0 || max_items < 0 || max_items > kMaxReadItems) {
      Throw(tx::Status::InvalidArgument("offset or max_items out of range"));
    }
    if (linearizable) {
      tx::Status s = node_->ReadBarrier(std::chrono::seconds(2));
      if (!s.ok()) Throw(s);
    }
    AppendLog::View v = log_->Read(static_cast<uint64_t>(offset), static_cast<size_t>(max_items));
    out.total = static_cast<int64_t>(v.total);
    out.checksum = static_cast<int64_t>(v.checksum);
    out.applied_index = static_cast<int64_t>(v.applied_index);
    out.items = std::move(v.items);
  }

  void Info(tx::raft_example::NodeInfo& out) override {
    tx::raft::NodeStatus s = node_->GetStatus();
    out.id = static_cast<int64_t>(s.id);
    out.role = std::string(tx::raft::NodeRoleName(s.role));
    out.term = static_cast<int64_t>(s.term);
    out.leader_id = static_cast<int64_t>(s.leader.id);
    out.leader_address = s.leader.address.host.empty() ? "" : tx::ToString(s.leader.address);
    out.commit_index = static_cast<int64_t>(s.commit_index);
    out.applied_index = static_cast<int64_t>(s.applied_index);
    out.last_index = static_cast<int64_t>(s.last_index);
    out.snapshot_index = static_cast<int64_t>(s.snapshot_index);
    out.health = s.health.ToString();
  }

  void TransferLeadership(int64_t target, int32_t timeout_ms) override {
    if (target <= 0 || timeout_ms <= 0 || timeout_ms > kMaxTimeoutMs) {
      Throw(tx::Status::InvalidArgument("target or timeout out of range"));
    }
    tx::Status s = node_->TransferLeadership(static_cast<tx::raft::NodeId>(target),
                                             std::chrono::milliseconds(timeout_ms));
    if (!s.ok()) Throw(s);
  }

  static void Fill(const tx::raft::ProposalResult& r, tx::raft_example::ProposeItemResult* out) {
    if (r.status.ok()) {
      tx::StatusOr<tx::raft::example::ApplyResult> applied =
          tx::raft::example::DecodeApplyResult(r.result);
      if (applied.ok()) {
        out->index = static_cast<int64_t>(r.index);
        out->position = static_cast<int64_t>(applied->position);
        out->checksum = static_cast<int64_t>(applied->checksum);
        return;
      }
      out->code = static_cast<int32_t>(applied.status().code());
      out->message = applied.status().message();
      return;
    }
    out->code = static_cast<int32_t>(r.status.code());
    out->message = r.status.message();
    if (r.not_leader) {
      out->not_leader = true;
      out->leader_id = static_cast<int64_t>(r.leader.id);
      out->leader_address = r.leader.address.host.empty() ? "" : tx::ToString(r.leader.address);
    }
  }

 private:
  tx::raft::RaftNode* const node_;
  AppendLog* const log_;
};

// RaftExample served by an EpollServer (--client-listen): the same calls and answers as
// ExampleHandler, but no call holds a thread while it waits. Propose and ProposeMany start their
// proposals with RaftNode::ProposeAsync, and the node's apply thread sends each reply the moment
// the entry is applied; a linearizable Read waits in ReadIndexAsync the same way. Info and plain
// Reads answer at once. TransferLeadership, rare and slow, runs on a thread of its own, one at a
// time. Requests arrive as "example:Method" (the multiplexed client) or "Method".
//
// Thread-safety: Dispatch runs on the server's I/O thread; callbacks on node threads. Must
// outlive the node's Stop() (which completes the waiting callbacks), and the server.
class AsyncExampleService {
 public:
  AsyncExampleService(tx::raft::RaftNode* node, AppendLog* log, uint32_t max_message_bytes)
      : node_(node), log_(log), config_(tx::rpc::MakeThriftConfiguration(max_message_bytes)) {}

  ~AsyncExampleService() {
    std::thread transfer;
    {
      std::lock_guard lock(transfer_mu_);
      transfer.swap(transfer_thread_);
    }
    if (transfer.joinable()) transfer.join();  // outside the lock: the thread ends by taking it
  }

  void Dispatch(std::string frame, tx::raft::example::EpollServer::Responder responder) {
    using apache::thrift::protocol::TMessageType;
    auto buffer = std::make_shared<TMemoryBuffer>(reinterpret_cast<uint8_t*>(frame.data()),
                                                  static_cast<uint32_t>(frame.size()),
                                                  TMemoryBuffer::OBSERVE, config_);
    // Strict: a request must carry the protocol version, as on every server of ours.
    TBinaryProtocolT<TMemoryBuffer> in(buffer, 0, 0, /*strict_read=*/true, /*strict_write=*/true);
    std::string name;
    TMessageType type;
    int32_t seqid = 0;
    try {
      in.readMessageBegin(name, type, seqid);
      if (type != apache::thrift::protocol::T_CALL) {
        responder.Close();  // we define no oneway calls: a client out of step
        return;
      }
      if (name.rfind(kServicePrefix, 0) == 0) name.erase(0, kServicePrefix.size());
      if (name == "Propose") {
        tx::raft_example::RaftExample_Propose_args args;
        args.read(&in);
        in.readMessageEnd();
        Propose(seqid, args, std::move(responder));
      } else if (name == "ProposeMany") {
        tx::raft_example::RaftExample_ProposeMany_args args;
        args.read(&in);
        in.readMessageEnd();
        ProposeMany(seqid, args, std::move(responder));
      } else if (name == "Read") {
        tx::raft_example::RaftExample_Read_args args;
        args.read(&in);
        in.readMessageEnd();
        Read(seqid, args, std::move(responder));
      } else if (name == "Info") {
        tx::raft_example::RaftExample_Info_args args;
        args.read(&in);
        in.readMessageEnd();
        tx::raft_example::RaftExample_Info_result result;
        ExampleHandler(node_, log_).Info(result.success);
        result.__isset.success = true;
        responder.Send(Encode("Info", seqid, result));
      } else if (name == "TransferLeadership") {
        tx::raft_example::RaftExample_TransferLeadership_args args;
        args.read(&in);
        in.readMessageEnd();
        TransferLeadership(seqid, args, std::move(responder));
      } else {
        in.skip(apache::thrift::protocol::T_STRUCT);
        in.readMessageEnd();
        responder.Send(EncodeApplicationError(
            name, seqid, TApplicationException::UNKNOWN_METHOD,
            fmt::format("unknown method {} (this port serves RaftExample only)", name)));
      }
    } catch (const apache::thrift::TException& e) {
      // A malformed request (bad version word, truncated or oversized field): the stream can
      // no longer be trusted, as with the threaded server.
      spdlog::warn("client port: malformed request ({}): closing the connection", e.what());
      responder.Close();
    }
  }

 private:
  using Responder = tx::raft::example::EpollServer::Responder;
  using TMemoryBuffer = apache::thrift::transport::TMemoryBuffer;
  template <typename Transport>
  using TBinaryProtocolT = apache::thrift::protocol::TBinaryProtocolT<Transport>;
  using TApplicationException = apache::thrift::TApplicationException;
  static constexpr std::string_view kServicePrefix = "example:";

  template <typename Result>
  static std::string Encode(const std::string& name, int32_t seqid, const Result& result) {
    auto buffer = std::make_shared<TMemoryBuffer>(256);
    TBinaryProtocolT<TMemoryBuffer> out(buffer);
    out.writeMessageBegin(name, apache::thrift::protocol::T_REPLY, seqid);
    result.write(&out);
    out.writeMessageEnd();
    return buffer->getBufferAsString();
  }

  static std::string EncodeApplicationError(const std::string& name, int32_t seqid,
                                            TApplicationException::TApplicationExceptionType type,
                                            const std::string& message) {
    auto buffer = std::make_shared<TMemoryBuffer>(256);
    TBinaryProtocolT<TMemoryBuffer> out(buffer);
    out.writeMessageBegin(name, apache::thrift::protocol::T_EXCEPTION, seqid);
    TApplicationException(type, message).write(&out);
    out.writeMessageEnd();
    return buffer->getBufferAsString();
  }

  static tx::raft_example::ExampleError ErrorOf(const tx::Status& s,
                                                const tx::raft::LeaderInfo* leader = nullptr) {
    tx::raft_example::ExampleError e;
    e.code = static_cast<int32_t>(s.code());
    e.message = s.message();
    if (leader != nullptr) {
      e.not_leader = true;
      e.leader_id = static_cast<int64_t>(leader->id);
      e.leader_address = leader->address.host.empty() ? "" : tx::ToString(leader->address);
    }
    return e;
  }

  template <typename Result>
  static void SendError(const char* name, int32_t seqid, const tx::raft_example::ExampleError& e,
                        const Responder& responder) {
    Result result;
    result.error = e;
    result.__isset.error = true;
    responder.Send(Encode(name, seqid, result));
  }

  void Propose(int32_t seqid, tx::raft_example::RaftExample_Propose_args& args,
               Responder responder) {
    using Result = tx::raft_example::RaftExample_Propose_result;
    if (args.item.size() > tx::raft::example::kMaxItemBytes || args.timeout_ms <= 0 ||
        args.timeout_ms > kMaxTimeoutMs) {
      SendError<Result>("Propose", seqid,
                        ErrorOf(tx::Status::InvalidArgument(fmt::format(
                            "item of {} bytes (max {}) or timeout {} ms out of range",
                            args.item.size(), tx::raft::example::kMaxItemBytes, args.timeout_ms))),
                        responder);
      return;
    }
    const auto deadline = tx::Clock::Real()->Now() + std::chrono::milliseconds(args.timeout_ms);
    node_->ProposeAsync(
        std::move(args.item), deadline,
        [seqid, responder = std::move(responder)](tx::raft::ProposalResult r) {
          if (!r.status.ok()) {
            SendError<Result>("Propose", seqid,
                              ErrorOf(r.status, r.not_leader ? &r.leader : nullptr), responder);
            return;
          }
          tx::StatusOr<tx::raft::example::ApplyResult> applied =
              tx::raft::example::DecodeApplyResult(r.result);
          if (!applied.ok()) {
            SendError<Result>("Propose", seqid, ErrorOf(applied.status()), responder);
            return;
          }
          Result result;
          result.success.index = static_cast<int64_t>(r.index);
          result.success.position = static_cast<int64_t>(applied->position);
          result.success.checksum = static_cast<int64_t>(applied->checksum);
          result.__isset.success = true;
          responder.Send(Encode("Propose", seqid, result));
        });
  }

  void ProposeMany(int32_t seqid, tx::raft_example::RaftExample_ProposeMany_args& args,
                   Responder responder) {
    using Result = tx::raft_example::RaftExample_ProposeMany_result;
    if (args.items.size() > kMaxProposeManyItems || args.timeout_ms <= 0 ||
        args.timeout_ms > kMaxTimeoutMs) {
      SendError<Result>("ProposeMany", seqid,
                        ErrorOf(tx::Status::InvalidArgument(
                            fmt::format("{} items (max {}) or timeout {} ms out of range",
                                        args.items.size(), kMaxProposeManyItems, args.timeout_ms))),
                        responder);
      return;
    }
    // Shared by the items' callbacks; the last one to finish sends the reply.
    struct Call {
      std::mutex mu;
      Result result;    // GUARDED_BY(mu)
      size_t left = 0;  // GUARDED_BY(mu)
      Responder responder;
      int32_t seqid = 0;
    };
    auto call = std::make_shared<Call>();
    call->result.success.assign(args.items.size(), {});
    call->result.__isset.success = true;
    call->left = args.items.size();
    call->responder = std::move(responder);
    call->seqid = seqid;
    auto finish_one = [call] {
      std::lock_guard lock(call->mu);
      if (--call->left == 0) call->responder.Send(Encode("ProposeMany", call->seqid, call->result));
    };
    if (args.items.empty()) {
      call->responder.Send(Encode("ProposeMany", seqid, call->result));
      return;
    }
    const auto deadline = tx::Clock::Real()->Now() + std::chrono::milliseconds(args.timeout_ms);
    for (size_t i = 0; i < args.items.size(); ++i) {
      if (args.items[i].size() > tx::raft::example::kMaxItemBytes) {
        {
          std::lock_guard lock(call->mu);
          tx::raft_example::ProposeItemResult& slot = call->result.success[i];
          slot.code = static_cast<int32_t>(tx::Status::Code::kInvalidArgument);
          slot.message = fmt::format("item of {} bytes (max {})", args.items[i].size(),
                                     tx::raft::example::kMaxItemBytes);
        }
        finish_one();
        continue;
      }
      node_->ProposeAsync(std::move(args.items[i]), deadline,
                          [call, i, finish_one](tx::raft::ProposalResult r) {
                            {
                              std::lock_guard lock(call->mu);
                              ExampleHandler::Fill(r, &call->result.success[i]);
                            }
                            finish_one();
                          });
    }
  }

  void Read(int32_t seqid, const tx::raft_example::RaftExample_Read_args& args,
            Responder responder) {
    using Result = tx::raft_example::RaftExample_Read_result;
    if (args.offset < 0 || args.max_items < 0 || args.max_items > kMaxReadItems) {
      SendError<Result>("Read", seqid,
                        ErrorOf(tx::Status::InvalidArgument("offset or max_items out of range")),
                        responder);
      return;
    }
    auto answer = [log = log_, seqid, offset = static_cast<uint64_t>(args.offset),
                   max_items = static_cast<size_t>(args.max_items),
                   responder](const tx::Status& barrier) {
      if (!barrier.ok()) {
        SendError<Result>("Read", seqid, ErrorOf(barrier), responder);
        return;
      }
      AppendLog::View v = log->Read(offset, max_items);
      Result result;
      result.success.total = static_cast<int64_t>(v.total);
      result.success.checksum = static_cast<int64_t>(v.checksum);
      result.success.applied_index = static_cast<int64_t>(v.applied_index);
      result.success.items = std::move(v.items);
      result.__isset.success = true;
      responder.Send(Encode("Read", seqid, result));
    };
    if (!args.linearizable) {
      answer(tx::Status::OK());
      return;
    }
    node_->ReadIndexAsync(tx::Clock::Real()->Now() + std::chrono::seconds(2), std::move(answer));
  }

  void TransferLeadership(int32_t seqid,
                          const tx::raft_example::RaftExample_TransferLeadership_args& args,
                          Responder responder) {
    using Result = tx::raft_example::RaftExample_TransferLeadership_result;
    if (args.target <= 0 || args.timeout_ms <= 0 || args.timeout_ms > kMaxTimeoutMs) {
      SendError<Result>("TransferLeadership", seqid,
                        ErrorOf(tx::Status::InvalidArgument("target or timeout out of range")),
                        responder);
      return;
    }
    std::lock_guard lock(transfer_mu_);
    if (transfer_running_) {
      SendError<Result>("TransferLeadership", seqid,
                        ErrorOf(tx::Status::ResourceExhausted(
                            "a leadership transfer is already in progress here")),
                        responder);
      return;
    }
    // The last one cleared the flag under this lock, its last use of it: joining is quick.
    if (transfer_thread_.joinable()) transfer_thread_.join();
    transfer_running_ = true;
    transfer_thread_ = std::thread([this, seqid, target = args.target,
                                    timeout = std::chrono::milliseconds(args.timeout_ms),
                                    responder = std::move(responder)] {
      tx::Status s = node_->TransferLeadership(static_cast<tx::raft::NodeId>(target), timeout);
      Result result;
      if (!s.ok()) {
        result.error = ErrorOf(s);
        result.__isset.error = true;
      }
      responder.Send(Encode("TransferLeadership", seqid, result));
      std::lock_guard done_lock(transfer_mu_);
      transfer_running_ = false;
    });
  }

  tx::raft::RaftNode* const node_;
  AppendLog* const log_;
  const std::shared_ptr<apache::thrift::TConfiguration> config_;

  std::mutex transfer_mu_;
  bool transfer_running_ = false;  // GUARDED_BY(transfer_mu_)
  std::thread transfer_thread_;    // GUARDED_BY(transfer_mu_): at most one transfer at a time
};

// The value of one series in the default registry's text rendering (0 if absent).
double Series(const std::string& text, const std::string& series) {
  size_t at = text.find(fmt::format("\n{} ", series));
  return at == std::string::npos ? 0 : std::stod(text.substr(at + series.size() + 2));
}

// One line of figures for benchmark reports: how well proposals were batched and where the
// time went, as this replica saw it.
void PrintStats(uint64_t id) {
  const std::string text = fmt::format("\n{}", tx::MetricsRegistry::Default()->RenderText());
  const std::string node = fmt::format("{{node=\"{}\"}}", id);
  double fsyncs = Series(text, "tx_raft_fsync_seconds_count" + node);
  double fsync_s = Series(text, "tx_raft_fsync_seconds_sum" + node);
  double entries = Series(text, "tx_raft_entries_persisted_total" + node);
  double batches = Series(text, "tx_raft_batches_sent_total" + node);
  double messages = Series(text, "tx_raft_messages_sent_total" + node);
  double commits = Series(text, "tx_raft_commit_seconds_count" + node);
  double commit_s = Series(text, "tx_raft_commit_seconds_sum" + node);
  double in_replies = Series(text, "tx_raft_reply_messages_total" + node);
  double handler_readies = Series(text, "tx_raft_handler_readies_total" + node);
  const std::string gather = fmt::format("tx_raft_append_gathers_total{{node=\"{}\",outcome=", id);
  double gathers_filled = Series(text, gather + "\"filled\"}");
  double gathers_timed_out = Series(text, gather + "\"timed_out\"}");
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  std::fprintf(stderr,
               "replica %llu: %.0f WAL syncs (%.2f entries each, mean %.0f us; %.0f Readies run "
               "by RPC handlers); %.0f batches sent (%.1f messages each, %.0f messages back in "
               "replies; %.0f gathered in full, %.0f cut short); %.0f proposals applied here, "
               "mean propose-to-apply %.0f us; CPU %.2f s user + %.2f s system\n",
               static_cast<unsigned long long>(id), fsyncs, fsyncs > 0 ? entries / fsyncs : 0,
               fsyncs > 0 ? 1e6 * fsync_s / fsyncs : 0, handler_readies, batches,
               batches > 0 ? messages / batches : 0, in_replies, gathers_filled, gathers_timed_out,
               commits, commits > 0 ? 1e6 * commit_s / commits : 0, seconds(usage.ru_utime),
               seconds(usage.ru_stime));
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t id = 0;
  std::string listen, peers, data_dir, metrics_listen, client_listen, log_level = "info";
  int tick_ms = 10, election_ticks = 15, heartbeat_ticks = 3;
  uint64_t snapshot_every = 10000;
  bool keep_items = true;
  bool print_stats = false;
  bool acks_in_replies = true;
  bool persist_on_handler = true;
  int64_t append_gather_us = 1000;

  CLI::App app{"raft_example_server: a replicated append-only list on a RaftNode."};
  app.add_option("--id", id, "this replica's id (>= 1)")->required();
  app.add_option("--listen", listen, "HOST:PORT for RaftService and RaftExample")->required();
  app.add_option("--peers", peers, "ID=HOST:PORT,... of every replica, this one included")
      ->required();
  app.add_option("--data-dir", data_dir, "where the log, hard state and snapshot live")->required();
  app.add_option("--tick-ms", tick_ms, "Raft tick interval")->check(CLI::Range(1, 1000));
  app.add_option("--election-ticks", election_ticks, "election timeout in ticks")
      ->check(CLI::Range(2, 1000));
  app.add_option("--heartbeat-ticks", heartbeat_ticks, "heartbeat interval in ticks")
      ->check(CLI::Range(1, 1000));
  app.add_option("--snapshot-every", snapshot_every, "snapshot every N applied entries (0: never)");
  app.add_option("--keep-items", keep_items,
                 "keep the items in memory (false: only their count and checksum, for benchmarks)");
  app.add_option("--metrics-listen", metrics_listen, "HOST:PORT for /metrics (off if empty)");
  app.add_option("--acks-in-replies", acks_in_replies,
                 "return acknowledgements in the reply to the batch they acknowledge (false: in "
                 "RPCs of their own; for measurements)");
  app.add_option("--persist-on-handler", persist_on_handler,
                 "a follower's RPC handler persists received entries itself when the Ready loop "
                 "is idle (false: it always waits for the Ready loop; for measurements)");
  app.add_option("--append-gather-us", append_gather_us,
                 "longest a leader holds a follower's next batch to gather the proposals that "
                 "come back after a commit (NodeOptions::max_append_gather; 0: never)")
      ->check(CLI::Range(int64_t{0}, int64_t{10'000}));
  app.add_option("--client-listen", client_listen,
                 "HOST:PORT where RaftExample alone is also served by an epoll server whose "
                 "calls hold no thread while they wait (off if empty)");
  app.add_flag("--print-stats", print_stats,
               "at exit, print replication statistics (batching, fsync, commit latency) to stderr");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off");
  CLI11_PARSE(app, argc, argv);

  tx::StatusOr<spdlog::level::level_enum> level = tx::ParseLogLevel(log_level);
  if (!level.ok()) {
    std::fprintf(stderr, "%s\n", level.status().ToString().c_str());
    return 2;
  }
  if (tx::Status s = tx::InitLogging({fmt::format("raft-example-{}", id), *level, ""}); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 2;
  }
  tx::rpc::RouteThriftLoggingToSpdlog();
  if (tx::Status s = tx::InstallShutdownHandlers(); !s.ok()) return Fail("signal handlers", s);
  if (tx::Status s = tx::ArmFailPointsFromEnv(); !s.ok()) return Fail("TX_FAILPOINTS", s);

  tx::StatusOr<tx::HostPort> listen_at = tx::ParseHostPort(listen);
  if (!listen_at.ok()) return Fail("--listen", listen_at.status());
  tx::StatusOr<std::map<tx::PeerId, tx::HostPort>> peer_map = tx::ParsePeers(peers);
  if (!peer_map.ok()) return Fail("--peers", peer_map.status());

  AppendLog log(keep_items);
  tx::raft::NodeOptions options;
  options.id = id;
  options.data_dir = data_dir;
  options.peers = *peer_map;
  options.multiplexed_service_name = "raft";
  options.tick_interval = std::chrono::milliseconds(tick_ms);
  options.election_timeout_ticks = election_ticks;
  options.heartbeat_ticks = heartbeat_ticks;
  options.snapshot_every_entries = snapshot_every;
  options.acks_in_replies = acks_in_replies;
  options.persist_on_handler = persist_on_handler;
  options.max_append_gather = std::chrono::microseconds(append_gather_us);
  tx::StatusOr<std::unique_ptr<tx::raft::RaftNode>> node =
      tx::raft::RaftNode::Create(options, &log);
  if (!node.ok()) return Fail("raft node", node.status());

  std::unique_ptr<tx::MetricsHttpServer> metrics;
  if (!metrics_listen.empty()) {
    tx::StatusOr<tx::HostPort> at = tx::ParseHostPort(metrics_listen);
    if (!at.ok()) return Fail("--metrics-listen", at.status());
    tx::raft::RaftNode* n = node->get();
    tx::StatusOr<std::unique_ptr<tx::MetricsHttpServer>> started = tx::MetricsHttpServer::Start(
        *at, tx::MetricsRegistry::Default(), [n] { return n->health(); });
    if (!started.ok()) return Fail("metrics server", started.status());
    metrics = *std::move(started);
  }

  auto mux = std::make_shared<apache::thrift::TMultiplexedProcessor>();
  mux->registerProcessor("raft", (*node)->processor());
  mux->registerProcessor("example", std::make_shared<tx::raft_example::RaftExampleProcessor>(
                                        std::make_shared<ExampleHandler>(node->get(), &log)));
  if (tx::Status s = (*node)->Start(); !s.ok()) return Fail("start raft node", s);
  tx::rpc::RpcServerOptions server_options;
  server_options.name = fmt::format("raft-example-{}", id);
  server_options.listen = *listen_at;
  tx::StatusOr<std::unique_ptr<tx::rpc::RpcServer>> server =
      tx::rpc::RpcServer::Start(mux, server_options);
  if (!server.ok()) return Fail("listen", server.status());

  AsyncExampleService async_service(node->get(), &log, server_options.max_message_bytes);
  std::unique_ptr<tx::raft::example::EpollServer> client_server;
  if (!client_listen.empty()) {
    tx::StatusOr<tx::HostPort> at = tx::ParseHostPort(client_listen);
    if (!at.ok()) return Fail("--client-listen", at.status());
    tx::raft::example::EpollServerOptions o;
    o.name = fmt::format("raft-example-{} client", id);
    o.listen = *at;
    o.max_frame_bytes = server_options.max_message_bytes;
    tx::StatusOr<std::unique_ptr<tx::raft::example::EpollServer>> started =
        tx::raft::example::EpollServer::Start(
            o, [&async_service](std::string frame, tx::raft::example::EpollServer::Responder r) {
              async_service.Dispatch(std::move(frame), std::move(r));
            });
    if (!started.ok()) return Fail("listen (client port)", started.status());
    client_server = *std::move(started);
    spdlog::info("client port: RaftExample on {}", tx::ToString(client_server->address()));
  }

  std::printf("listening on %s\n", tx::ToString((*server)->address()).c_str());
  std::fflush(stdout);

  tx::ShutdownSignal::Process().Wait();
  spdlog::info("shutting down: {}", tx::ShutdownSignal::Process().reason());
  if (client_server) client_server->Stop();
  (*server)->Stop();
  (*node)->Stop();  // completes the client port's waiting calls (their replies go nowhere)
  if (print_stats) PrintStats(id);
  if (metrics) metrics->Stop();
  spdlog::shutdown();
  return 0;
}
