#include "raft/node/transport.h"

#include <spdlog/spdlog.h>
#include <thrift/protocol/TMultiplexedProtocol.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <thread>
#include <utility>

#include "RaftService.h"
#include "raft/node/convert.h"

namespace tx::raft {
namespace {

// Per-message allowance for headers and Thrift framing in the byte bounds.
constexpr uint64_t kMessageOverheadBytes = 64;

// A connection pool whose connections speak RaftService, multiplexed or not.
class RaftPeerPool final : public rpc::ConnectionPoolBase {
 public:
  RaftPeerPool(HostPort endpoint, rpc::RpcClientOptions options, Clock* clock,
               std::string service_name)
      : ConnectionPoolBase(std::move(endpoint), std::move(options), clock),
        service_name_(std::move(service_name)) {}

  // Unavailable/TimedOut/Internal as ClientPool::Call; a RaftError reply maps to its code.
  // *reply receives the messages the peer returned (see RaftService.Deliver).
  Status Deliver(const raft_api::MessageBatch& batch, raft_api::MessageBatch* reply) {
    StatusOr<Slot> slot = Acquire();
    if (!slot.ok()) return slot.status();
    if (slot->client == nullptr) {
      std::shared_ptr<apache::thrift::protocol::TProtocol> protocol = slot->connection->protocol();
      if (!service_name_.empty()) {
        protocol = std::make_shared<apache::thrift::protocol::TMultiplexedProtocol>(protocol,
                                                                                    service_name_);
      }
      slot->client = std::make_shared<raft_api::RaftServiceClient>(protocol);
    }
    auto* client = static_cast<raft_api::RaftServiceClient*>(slot->client.get());
    Status status;
    bool reusable = true;
    try {
      client->Deliver(*reply, batch);
    } catch (const raft_api::RaftError& e) {
      // A reply: the connection is still in step.
      // The code is read as an integer: a peer may send any i32 (see convert.h).
      int32_t code;
      std::memcpy(&code, &e.code, sizeof code);
      status = code == raft_api::RaftErrorCode::UNAVAILABLE
                   ? Status::Unavailable(fmt::format("{}: {}", endpoint(), e.message))
                   : Status::InvalidArgument(fmt::format("{}: {}", endpoint(), e.message));
    } catch (const std::exception& e) {
      status = rpc::StatusFromThriftException(e, endpoint());
      reusable = false;
    }
    Release(std::move(*slot), reusable);
    return status;
  }

 private:
  const std::string service_name_;
};

}  // namespace

uint64_t ApproximateMessageBytes(const Message& m) {
  uint64_t bytes = kMessageOverheadBytes + m.context.size() + m.snapshot_data.size();
  for (const Entry& e : m.entries) bytes += e.data.size() + 32;
  return bytes;
}

size_t CoalesceMessages(std::vector<Message>* batch) {
  if (batch->size() < 2) return 0;
  size_t out = 0;  // (*batch)[0, out] holds the merged prefix
  for (size_t i = 1; i < batch->size(); ++i) {
    Message& a = (*batch)[out];
    Message& b = (*batch)[i];
    bool merged = false;
    if (a.type == b.type && a.term == b.term && a.to == b.to) {
      switch (a.type) {
        case MessageType::kAppend: {
          Term a_last_term = a.entries.empty() ? a.log_term : a.entries.back().term;
          if (b.index == a.index + a.entries.size() && b.log_term == a_last_term) {
            a.entries.reserve(a.entries.size() + b.entries.size());
            for (Entry& e : b.entries) a.entries.push_back(std::move(e));
            a.commit = std::max(a.commit, b.commit);
            merged = true;
          }
          break;
        }
        case MessageType::kAppendResponse:
          if (!a.reject && !b.reject) {
            if (b.index >= a.index) a = std::move(b);
            merged = true;
          }
          break;
        case MessageType::kHeartbeat:
        case MessageType::kHeartbeatResponse:
          if (b.read_seq >= a.read_seq && b.commit >= a.commit) {
            a = std::move(b);
            merged = true;
          }
          break;
        default:
          break;
      }
    }
    if (!merged && ++out != i) (*batch)[out] = std::move(b);
  }
  size_t removed = batch->size() - (out + 1);
  batch->resize(out + 1);
  return removed;
}

// One peer's queue, delay line and sender thread.
class Transport::PeerSender {
 public:
  PeerSender(Transport* transport, NodeId peer, const HostPort& address)
      : transport_(transport), peer_(peer), waiter_(transport->options_.clock) {
    SetAddress(address);
    thread_ = std::thread([this] { Run(); });
  }

  ~PeerSender() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    waiter_.Notify();
    thread_.join();
  }

  void Wake() { waiter_.Notify(); }

  void SetAddress(const HostPort& address) {
    auto pool = std::make_shared<RaftPeerPool>(address, transport_->options_.client,
                                               transport_->options_.clock,
                                               transport_->options_.service_name);
    std::lock_guard lock(mu_);
    pool_ = std::move(pool);
  }

  // Returns false (and drops the message) when the queue is over its bound.
  bool Enqueue(Message m) {
    uint64_t bytes = ApproximateMessageBytes(m);
    {
      std::lock_guard lock(mu_);
      if (queue_bytes_ + bytes > transport_->options_.max_queue_bytes && !queue_.empty()) {
        return false;
      }
      queue_bytes_ += bytes;
      queue_.push_back(Queued{std::move(m), bytes});
      if (reply_holds_ > 0) return true;  // a handler returns it in its reply (HoldReplies)
    }
    waiter_.Notify();
    return true;
  }

  void Hold() {
    std::lock_guard lock(mu_);
    ++reply_holds_;
  }

  // Ends one hold, taking the queue into *out if out is not null.
  void Release(std::vector<Message>* out) {
    bool wake;
    {
      std::lock_guard lock(mu_);
      --reply_holds_;
      if (out != nullptr) TakeQueuedLocked(out);
      wake = !queue_.empty();
    }
    if (wake) waiter_.Notify();
  }

  // Holds `m` back until `due` (an injected delay). Bounded like the queue.
  void Delay(Message m, Clock::TimePoint due) {
    uint64_t bytes = ApproximateMessageBytes(m);
    std::lock_guard lock(mu_);
    if (delayed_bytes_ + bytes > transport_->options_.max_queue_bytes) {
      transport_->counters_.dropped_queue_full->Increment();
      return;
    }
    delayed_bytes_ += bytes;
    delayed_.emplace(due, Queued{std::move(m), bytes});
  }

  size_t queued() const {
    std::lock_guard lock(mu_);
    return queue_.size() + delayed_.size();
  }

  // Requires mu_. Moves the queue (not the delay line) into *out.
  void TakeQueuedLocked(std::vector<Message>* out) {
    while (!queue_.empty()) {
      out->push_back(std::move(queue_.front().message));
      queue_bytes_ -= queue_.front().bytes;
      queue_.pop_front();
    }
  }

 private:
  struct Queued {
    Message message;
    uint64_t bytes = 0;
  };

  void Run() {
    const uint64_t max_batch_bytes = transport_->options_.max_batch_bytes;
    Clock* clock = transport_->options_.clock;
    std::vector<Message> batch;
    while (true) {
      // Not in an RPC now: take what the core produced meanwhile (see RequestPull).
      transport_->MaybePull();
      std::shared_ptr<RaftPeerPool> pool;
      {
        std::unique_lock lock(mu_);
        if (stop_) return;
        uint64_t bytes = 0;
        // Messages whose injected delay is over go first.
        Clock::TimePoint now = clock->Now();
        while (!delayed_.empty() && delayed_.begin()->first <= now &&
               batch.size() < kMaxMessagesPerBatch) {
          Queued q = std::move(delayed_.begin()->second);
          delayed_.erase(delayed_.begin());
          delayed_bytes_ -= q.bytes;
          bytes += q.bytes;
          batch.push_back(std::move(q.message));
        }
        while (!queue_.empty() && batch.size() < kMaxMessagesPerBatch &&
               (batch.empty() || bytes + queue_.front().bytes <= max_batch_bytes)) {
          Queued& q = queue_.front();
          bytes += q.bytes;
          queue_bytes_ -= q.bytes;
          batch.push_back(std::move(q.message));
          queue_.pop_front();
        }
        if (batch.empty()) {
          std::optional<Clock::TimePoint> next_due;
          if (!delayed_.empty()) next_due = delayed_.begin()->first;
          lock.unlock();
          if (next_due.has_value()) {
            waiter_.WaitUntil(*next_due);
          } else {
            waiter_.Wait();
          }
          continue;
        }
        pool = pool_;
      }
      CoalesceMessages(&batch);
      if (transport_->faults_active_.load(std::memory_order_relaxed)) {
        transport_->ApplyFaults(peer_, &batch, this);
        if (batch.empty()) continue;
      }
      raft_api::MessageBatch wire;
      wire.from_node = static_cast<int64_t>(transport_->options_.self);
      wire.to_node = static_cast<int64_t>(peer_);
      wire.from_address = transport_->advertise_;
      wire.messages.reserve(batch.size());
      for (Message& m : batch) wire.messages.push_back(ToThrift(std::move(m)));
      const size_t count = batch.size();
      batch.clear();
      raft_api::MessageBatch reply;
      const auto sent_at = std::chrono::steady_clock::now();
      Status s = pool->Deliver(wire, &reply);
      if (s.ok()) {
        transport_->counters_.batches_sent->Increment();
        transport_->counters_.messages_sent->Increment(count);
        failures_logged_ = 0;
        if (!reply.messages.empty()) {
          transport_->HandleReply(peer_, reply, std::chrono::steady_clock::now() - sent_at);
        }
      } else {
        transport_->counters_.send_failures->Increment();
        transport_->counters_.dropped_send_failed->Increment(count);
        // A dead peer fails every batch: log the first few of a run, then every 100th.
        if (failures_logged_ < 3 || failures_logged_ % 100 == 0) {
          spdlog::warn("raft node {}: dropped {} message(s) to node {}: {}",
                       transport_->options_.self, count, peer_, s.ToString());
        }
        ++failures_logged_;
      }
    }
  }

  Transport* const transport_;
  const NodeId peer_;
  Waiter waiter_;                 // Enqueue/Delay/stop notify; the sender thread waits
  uint64_t failures_logged_ = 0;  // sender thread only

  mutable std::mutex mu_;
  std::deque<Queued> queue_;                         // GUARDED_BY(mu_)
  uint64_t queue_bytes_ = 0;                         // GUARDED_BY(mu_)
  std::multimap<Clock::TimePoint, Queued> delayed_;  // GUARDED_BY(mu_)
  uint64_t delayed_bytes_ = 0;                       // GUARDED_BY(mu_)
  std::shared_ptr<RaftPeerPool> pool_;               // GUARDED_BY(mu_)
  int reply_holds_ = 0;                              // GUARDED_BY(mu_): see HoldReplies
  bool stop_ = false;                                // GUARDED_BY(mu_)
  std::thread thread_;
};

Transport::Transport(TransportOptions options)
    : options_(std::move(options)), advertise_(ToString(options_.advertise)) {
  const std::string node = std::to_string(options_.self);
  MetricsRegistry* m = options_.metrics;
  counters_.batches_sent =
      m->AddCounterFamily("tx_raft_batches_sent_total",
                          "Message batches (RPCs) delivered to peers.", {"node"})
          ->WithLabels({node});
  counters_.messages_sent = m->AddCounterFamily("tx_raft_messages_sent_total",
                                                "Raft messages delivered to peers.", {"node"})
                                ->WithLabels({node});
  counters_.send_failures =
      m->AddCounterFamily("tx_raft_send_failures_total",
                          "Message batches that could not be delivered.", {"node"})
          ->WithLabels({node});
  auto* dropped =
      m->AddCounterFamily("tx_raft_messages_dropped_total",
                          "Raft messages dropped before delivery, by reason.", {"node", "reason"});
  counters_.dropped_no_address = dropped->WithLabels({node, "no_address"});
  counters_.dropped_queue_full = dropped->WithLabels({node, "queue_full"});
  counters_.dropped_send_failed = dropped->WithLabels({node, "send_failed"});
  counters_.dropped_fault = dropped->WithLabels({node, "fault_injected"});
  counters_.reply_messages =
      m->AddCounterFamily("tx_raft_reply_messages_total",
                          "Raft messages received in replies to our batches (acknowledgements "
                          "returned by the peer's handler instead of its own RPC).",
                          {"node"})
          ->WithLabels({node});
  counters_.reply_refused =
      m->AddCounterFamily("tx_raft_reply_refused_total",
                          "Replies whose messages were refused as malformed.", {"node"})
          ->WithLabels({node});
}

Transport::~Transport() { Stop(); }

void Transport::Stop() {
  std::map<NodeId, std::unique_ptr<PeerSender>> senders;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    senders.swap(senders_);
  }
  senders.clear();  // joins each sender thread; an RPC in flight ends within its timeout
}

void Transport::SetAddress(NodeId peer, const HostPort& address) {
  std::lock_guard lock(mu_);
  auto it = addresses_.find(peer);
  if (it != addresses_.end() && it->second == address) return;
  addresses_[peer] = address;
  auto s = senders_.find(peer);
  if (s != senders_.end()) {
    s->second->SetAddress(address);
  } else if (!stopped_) {
    // Senders exist for every known peer, so a pull request always finds one to run it.
    senders_.emplace(peer, std::make_unique<PeerSender>(this, peer, address));
  }
}

void Transport::LearnAddress(NodeId peer, const HostPort& address) {
  {
    std::lock_guard lock(mu_);
    if (addresses_.count(peer) != 0) return;
  }
  SetAddress(peer, address);
}

void Transport::ForgetAddress(NodeId peer) {
  std::unique_ptr<PeerSender> sender;
  {
    std::lock_guard lock(mu_);
    addresses_.erase(peer);
    auto it = senders_.find(peer);
    if (it != senders_.end()) {
      sender = std::move(it->second);
      senders_.erase(it);
    }
  }
  // Joined outside mu_.
}

std::optional<HostPort> Transport::Address(NodeId peer) const {
  std::lock_guard lock(mu_);
  auto it = addresses_.find(peer);
  if (it == addresses_.end()) return std::nullopt;
  return it->second;
}

std::map<NodeId, HostPort> Transport::Addresses() const {
  std::lock_guard lock(mu_);
  return addresses_;
}

void Transport::Send(std::vector<Message> messages) {
  if (messages.empty()) return;
  std::lock_guard lock(mu_);
  if (stopped_) return;
  for (Message& m : messages) {
    auto it = senders_.find(m.to);
    if (it == senders_.end()) {
      auto address = addresses_.find(m.to);
      if (address == addresses_.end()) {
        counters_.dropped_no_address->Increment();
        continue;
      }
      it = senders_.emplace(m.to, std::make_unique<PeerSender>(this, m.to, address->second)).first;
    }
    if (!it->second->Enqueue(std::move(m))) counters_.dropped_queue_full->Increment();
  }
}

void Transport::SetPullCallback(std::function<void()> pull) { pull_ = std::move(pull); }

void Transport::SetReplyCallback(ReplyCallback callback) { on_reply_ = std::move(callback); }

void Transport::HoldReplies(NodeId peer) {
  std::lock_guard lock(mu_);
  auto it = senders_.find(peer);
  if (it != senders_.end()) it->second->Hold();
}

void Transport::ReleaseReplies(NodeId peer, std::vector<Message>* out) {
  if (out != nullptr && faults_active_.load(std::memory_order_relaxed)) out = nullptr;
  std::lock_guard lock(mu_);
  auto it = senders_.find(peer);
  if (it == senders_.end()) return;
  it->second->Release(out);
  if (out != nullptr) CoalesceMessages(out);
}

void Transport::HandleReply(NodeId peer, raft_api::MessageBatch& reply,
                            std::chrono::nanoseconds round_trip) {
  // The reply must come from the peer we called, to us, like any batch from it.
  StatusOr<std::vector<Message>> messages =
      reply.from_node == static_cast<int64_t>(peer)
          ? FromThriftBatch(reply, options_.self)
          : Status::InvalidArgument(
                fmt::format("reply from node {} to a batch for node {}", reply.from_node, peer));
  if (!messages.ok()) {
    counters_.reply_refused->Increment();
    spdlog::warn("raft node {}: refused the messages in a reply from node {}: {}", options_.self,
                 peer, messages.status().ToString());
    return;
  }
  if (IncomingBlocked(peer)) return;  // lost, as a partition would
  counters_.reply_messages->Increment(messages->size());
  if (on_reply_) on_reply_(peer, std::move(messages).value(), round_trip);
}

void Transport::RequestPull() {
  if (pull_requested_.exchange(true, std::memory_order_acq_rel)) return;  // one is pending
  std::lock_guard lock(mu_);
  for (auto& [peer, sender] : senders_) sender->Wake();
}

size_t Transport::QueuedMessages(NodeId peer) const {
  std::lock_guard lock(mu_);
  auto it = senders_.find(peer);
  return it == senders_.end() ? 0 : it->second->queued();
}

void Transport::RecomputeFaultsActive() {
  faults_active_.store(!blocked_outgoing_.empty() || !blocked_incoming_.empty() || hook_ != nullptr,
                       std::memory_order_relaxed);
}

void Transport::Block(NodeId peer, bool outgoing, bool incoming) {
  std::lock_guard lock(faults_mu_);
  if (outgoing) blocked_outgoing_.insert(peer);
  if (incoming) blocked_incoming_.insert(peer);
  RecomputeFaultsActive();
}

void Transport::Unblock(NodeId peer, bool outgoing, bool incoming) {
  std::lock_guard lock(faults_mu_);
  if (outgoing) blocked_outgoing_.erase(peer);
  if (incoming) blocked_incoming_.erase(peer);
  RecomputeFaultsActive();
}

void Transport::UnblockAll() {
  std::lock_guard lock(faults_mu_);
  blocked_outgoing_.clear();
  blocked_incoming_.clear();
  RecomputeFaultsActive();
}

void Transport::SetFaultHook(std::shared_ptr<TransportFaultHook> hook) {
  std::lock_guard lock(faults_mu_);
  hook_ = std::move(hook);
  RecomputeFaultsActive();
}

bool Transport::IncomingBlocked(NodeId peer) const {
  if (!faults_active_.load(std::memory_order_relaxed)) return false;
  std::lock_guard lock(faults_mu_);
  return blocked_incoming_.count(peer) != 0;
}

void Transport::ApplyFaults(NodeId peer, std::vector<Message>* batch, PeerSender* sender) {
  std::shared_ptr<TransportFaultHook> hook;
  {
    std::lock_guard lock(faults_mu_);
    if (blocked_outgoing_.count(peer) != 0) {
      counters_.dropped_fault->Increment(batch->size());
      batch->clear();
      return;
    }
    hook = hook_;
  }
  if (hook == nullptr) return;
  std::vector<Message> out;
  out.reserve(batch->size());
  for (Message& m : *batch) {
    FaultDecision d = hook->OnSend(options_.self, peer, m.type);
    switch (d.action) {
      case FaultDecision::Action::kDeliver:
        out.push_back(std::move(m));
        break;
      case FaultDecision::Action::kDrop:
        counters_.dropped_fault->Increment();
        break;
      case FaultDecision::Action::kDuplicate:
        out.push_back(m);
        out.push_back(std::move(m));
        break;
      case FaultDecision::Action::kDelay: {
        auto delay = std::clamp(d.delay, std::chrono::milliseconds(0), kMaxFaultDelay);
        sender->Delay(std::move(m), options_.clock->Now() + delay);
        break;
      }
    }
  }
  batch->swap(out);
}

}  // namespace tx::raft
