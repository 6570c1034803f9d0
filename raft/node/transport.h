// The sending half of the Raft transport: one sender thread per peer with a bounded queue, and
// the address book that says where each peer listens. (The receiving half is RaftService,
// served by the node; see node.cc.)
//
// Send() sorts messages into their peers' queues and returns at once. A peer's sender thread
// takes everything queued (up to max_batch_bytes / kMaxMessagesPerBatch), converts it to one
// MessageBatch and delivers it with one RPC over a pooled connection (connect/recv timeouts,
// reconnect with jittered back-off: common/rpc/client.h). While that RPC is in flight new
// messages queue up and leave together in the next batch, which is how proposals from many
// threads end up in shared AppendEntries on a busy leader and how a busy follower's
// acknowledgements are coalesced.
//
// Loss is normal: a message to a peer with no known address, a message that finds the peer's
// queue over max_queue_bytes, and a batch whose RPC fails are dropped and counted; Raft
// retransmits what matters (heartbeats, probes, snapshot rewinds).
//
// Fault injection (txchaos): per-peer blocks in either direction and a TransportFaultHook
// consulted for every outgoing message (drop, delay, duplicate). When no fault is configured the
// only cost is one relaxed atomic load per batch.
//
// Thread-safe. Messages handed to Send() by one thread, or by several threads serialized by a
// lock held across their Send() calls, keep their order per peer (except delayed ones).

#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/metrics.h"
#include "common/net.h"
#include "common/rpc/client.h"
#include "raft/core/message.h"
#include "raft/node/node.h"
#include "raft_types.h"

namespace tx::raft {

struct TransportOptions {
  NodeId self = kNoNode;
  HostPort advertise;        // sent with every batch
  std::string service_name;  // non-empty: peers serve RaftService multiplexed under it
  rpc::RpcClientOptions client;
  uint64_t max_queue_bytes = 64 << 20;
  uint64_t max_batch_bytes = 4 << 20;
  Clock* clock = Clock::Real();
  MetricsRegistry* metrics = MetricsRegistry::Default();
};

class Transport {
 public:
  explicit Transport(TransportOptions options);
  ~Transport();  // Stop()
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Drops whatever is queued and joins the sender threads. Idempotent; Send() afterwards drops.
  void Stop();

  // Sets (replaces) the address of `peer`; its sender reconnects there.
  void SetAddress(NodeId peer, const HostPort& address);
  // Sets the address only if none is known (addresses learned from incoming batches).
  void LearnAddress(NodeId peer, const HostPort& address);
  void ForgetAddress(NodeId peer);
  std::optional<HostPort> Address(NodeId peer) const;
  std::map<NodeId, HostPort> Addresses() const;

  // Queues each message for its peer (m.to). Never blocks on the network.
  void Send(std::vector<Message> messages);

  // Pull model, for messages the owner can produce at any time (a Raft leader's replication
  // traffic). RequestPull() says "there may be messages"; the next sender thread that is not
  // in the middle of an RPC runs the pull callback, which takes them from the core and Send()s
  // them. A sender whose RPC is in flight pulls when it returns, so everything produced
  // meanwhile (say, the Appends of many proposals) leaves in one batch, and an idle link
  // still sends at once. The callback is set once, before the first RequestPull(), and runs
  // on a sender thread holding no transport lock.
  void SetPullCallback(std::function<void()> pull);
  void RequestPull();

  // Acknowledgements in replies (thrift/raft.thrift, Deliver). The receiving side: an RPC
  // handler that holds its reply to `peer` until the peer's entries are durable brackets the
  // hold with HoldReplies/ReleaseReplies. In between, messages queued for `peer` do not wake its
  // sender (they would race the handler for them); ReleaseReplies moves the queued messages
  // (not delayed ones) into *out, coalesced, when out is not null and no fault injection is
  // configured (faults apply on the sender's path only), and wakes the sender for whatever is
  // left. Holds nest (one per handler). The sending side: messages that come back in a reply
  // are validated and handed to the reply callback on the sender's thread, holding no transport
  // lock (dropped while incoming messages from that peer are blocked), with the round trip of
  // the RPC that returned them (send to reply, wall time). The sender sends nothing more to that
  // peer until the callback returns. The callback is set once, before the first Send().
  void HoldReplies(NodeId peer);
  void ReleaseReplies(NodeId peer, std::vector<Message>* out);
  using ReplyCallback = std::function<void(NodeId from, std::vector<Message> messages,
                                           std::chrono::nanoseconds round_trip)>;
  void SetReplyCallback(ReplyCallback callback);

  // Fault injection.
  void Block(NodeId peer, bool outgoing, bool incoming);
  void Unblock(NodeId peer, bool outgoing, bool incoming);
  void UnblockAll();
  void SetFaultHook(std::shared_ptr<TransportFaultHook> hook);
  bool IncomingBlocked(NodeId peer) const;

  // Messages queued to `peer` and not yet sent (tests, metrics).
  size_t QueuedMessages(NodeId peer) const;

 private:
  class PeerSender;
  friend class PeerSender;

  struct Counters {
    Counter* batches_sent = nullptr;
    Counter* messages_sent = nullptr;
    Counter* send_failures = nullptr;
    Counter* dropped_no_address = nullptr;
    Counter* dropped_queue_full = nullptr;
    Counter* dropped_send_failed = nullptr;
    Counter* dropped_fault = nullptr;
    Counter* reply_messages = nullptr;
    Counter* reply_refused = nullptr;
  };

  // Runs the pull callback if a pull was requested since the last one.
  void MaybePull() {
    if (pull_requested_.load(std::memory_order_acquire) &&
        pull_requested_.exchange(false, std::memory_order_acq_rel)) {
      pull_();
    }
  }

  // Validates the messages of a reply from `peer` and hands them to on_reply_. Sender thread.
  void HandleReply(NodeId peer, raft_api::MessageBatch& reply, std::chrono::nanoseconds round_trip);

  // Applies blocks and the hook to one batch bound for `peer`; may move messages into the
  // sender's delay line. Called on the sender's thread.
  void ApplyFaults(NodeId peer, std::vector<Message>* batch, PeerSender* sender);
  void RecomputeFaultsActive();  // requires faults_mu_

  const TransportOptions options_;
  const std::string advertise_;  // options_.advertise as "host:port", sent with every batch
  Counters counters_;

  mutable std::mutex mu_;
  std::map<NodeId, HostPort> addresses_;                   // GUARDED_BY(mu_)
  std::map<NodeId, std::unique_ptr<PeerSender>> senders_;  // GUARDED_BY(mu_)
  bool stopped_ = false;                                   // GUARDED_BY(mu_)

  std::function<void()> pull_;  // set before senders run; constant afterwards
  ReplyCallback on_reply_;      // likewise
  std::atomic<bool> pull_requested_{false};

  // Set while any block or hook is configured: the fast path reads only this.
  std::atomic<bool> faults_active_{false};
  mutable std::mutex faults_mu_;
  std::set<NodeId> blocked_outgoing_;         // GUARDED_BY(faults_mu_)
  std::set<NodeId> blocked_incoming_;         // GUARDED_BY(faults_mu_)
  std::shared_ptr<TransportFaultHook> hook_;  // GUARDED_BY(faults_mu_)
};

// Merges adjacent messages of a batch (in place, order otherwise kept) where one message says
// everything the pair says, so a busy link carries fewer, larger messages and the receiver
// steps and answers fewer of them:
//   Append + Append that continues it (same term; the second's previous entry is the first's
//     last) -> one Append with both runs of entries and the later commit index. The follower
//     treats it exactly as the two in a row and answers once, for the last entry, which
//     acknowledges both on the leader.
//   AppendResponse + AppendResponse, both successes of one term -> the one with the higher
//     index (it acknowledges everything the other does).
//   Heartbeat + Heartbeat, HeartbeatResponse + HeartbeatResponse of one term -> the later one
//     (the higher commit and ReadIndex round).
// Returns the number of messages removed.
size_t CoalesceMessages(std::vector<Message>* batch);

// Approximate bytes a message occupies (payloads plus a fixed allowance), for queue and batch
// bounds.
uint64_t ApproximateMessageBytes(const Message& m);

}  // namespace tx::raft
