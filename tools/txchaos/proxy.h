// NetworkProxy: the network of a txchaos cluster, in the txchaos process.
//
// Each directed link between two nodes ("c1" -> "p2": the connections c1 opens to p2) gets a
// listening port of its own on 127.0.0.1, and the processes are told (TX_DIAL_REWRITE,
// common/rpc/dial_rewrite.h) to reach each peer through its link's port. The proxy forwards the
// link's connections to the destination's real address, frame by frame (every connection carries
// framed Thrift: thrift_frame.h), and applies the link's faults to whole frames in both
// directions of its connections (requests and their replies):
//
//   cut        a blackhole: every frame on the link's connections, open or new, is discarded, so
//              callers wait for their timeouts as behind a real partition. New connections are
//              still accepted (the kernel completes the handshake anyway). When the cut is lifted,
//              the connections that lost frames are reset (their streams are no longer whole),
//              and callers reconnect at once instead of waiting for their timeouts.
//              A one-way partition is a cut of one direction's link: "a cannot reach b" cuts
//              a -> b (a's calls to b and their replies) and leaves b -> a alone.
//   drop       with probability p a frame is discarded and its connection reset, which is what
//              a lost message looks like above TCP: the caller's call fails and it cannot tell
//              whether the request arrived.
//   delay      each frame is held for a uniformly random time in [min, max]; frames of one
//              connection keep their order (as TCP would).
//   duplicate  with probability p a request frame of a method that is safe to receive twice
//              (Options::duplicable_methods) is sent again `duplicate_after` later on a
//              connection of its own, and the reply to the copy is read and discarded: a late
//              duplicate, as a retransmitting network or a retrying client would produce.
//              Execute is not in the default list: TCP never duplicates and no client repeats
//              an Execute, so a duplicate there is a fault that cannot happen.
//
// Known difference from a real network: a connection to a process that is down is accepted by
// the proxy and then reset, so the caller sees "connection failed during the call" (the request
// may have been sent) where it would otherwise see "connection refused" (not sent). Callers must
// handle both; they may abort a little more often under the proxy.
//
// One thread runs every link with epoll. Per connection at most kMaxBufferedBytes wait in each
// direction (reading stops until they drain), frames over Options::max_frame_bytes reset the
// connection, and at most kMaxPendingDuplicates copies are in flight; so memory is bounded by
// the number of connections, which the processes' own connection caps bound.
//
// Thread-safe: every public method may be called from any thread (they run on the proxy thread
// and wait for it). Stop() (and the destructor) resets every connection and joins the thread.

#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/net.h"
#include "common/status.h"

namespace tx::chaos {

struct LinkFaults {
  bool cut = false;
  double drop_probability = 0;       // [0, 1], per frame
  double duplicate_probability = 0;  // [0, 1], per duplicable request frame
  std::chrono::milliseconds delay_min{0};
  std::chrono::milliseconds delay_max{0};
  std::chrono::milliseconds duplicate_after{20};

  bool any() const {
    return cut || drop_probability > 0 || duplicate_probability > 0 || delay_max.count() > 0;
  }
  // "cut", "drop=0.05 delay=1-20ms dup=0.1", "none".
  std::string ToString() const;
};

struct LinkStats {
  uint64_t connections = 0;  // accepted
  uint64_t frames = 0;       // read from either side
  uint64_t bytes = 0;
  uint64_t blackholed_frames = 0;  // discarded by a cut
  uint64_t dropped_frames = 0;     // discarded by a drop (each also resets a connection)
  uint64_t delayed_frames = 0;
  uint64_t duplicated_frames = 0;  // copies sent
  uint64_t upstream_failures = 0;  // connections to the destination that could not be made
};

struct LinkInfo {
  std::string from, to;
  HostPort address;      // where the proxy listens for this link
  HostPort destination;  // the real address
  LinkFaults faults;
  LinkStats stats;
};

// A frame the proxy dropped or duplicated, for the run's history.
struct ProxyEvent {
  std::string from, to;
  std::string what;     // "drop" or "duplicate"
  std::string method;   // the message name, or "?" when the frame is not a Thrift message
  bool request = true;  // direction: the caller's request (true) or the reply
};

class NetworkProxy {
 public:
  // Bytes waiting per connection and direction before the proxy stops reading that side.
  static constexpr size_t kMaxBufferedBytes = 8 << 20;
  // Duplicates in flight at once (each holds a connection); more are not made.
  static constexpr size_t kMaxPendingDuplicates = 256;

  struct Options {
    uint64_t seed = 1;  // drop/delay/duplicate choices, one generator per link
    // Above the processes' own 16 MiB bound, so the proxy never refuses what they accept.
    uint32_t max_frame_bytes = 32u << 20;
    // Methods whose requests may be duplicated (compared without a multiplexing prefix).
    std::set<std::string> duplicable_methods = {
        "Deliver",  // Raft: duplicates and stale messages are part of its model
        "Prepare",        "Commit",       "Abort",       // idempotent at participants and,
        "CommitOnePhase", "Resolve",      "GetOutcome",  // for Commit/Abort, at coordinators
        "Begin",          "GetDirectory", "GetClusterStatus",
        "Status",         "GetInfo"};
    // How long a duplicate's connection waits for (and discards) the reply.
    std::chrono::milliseconds duplicate_reply_timeout{2000};
    // Called on the proxy thread for every drop and duplicate; must be quick and thread-safe.
    std::function<void(const ProxyEvent&)> on_event;
  };

  static StatusOr<std::unique_ptr<NetworkProxy>> Start(Options options);
  ~NetworkProxy();
  NetworkProxy(const NetworkProxy&) = delete;
  NetworkProxy& operator=(const NetworkProxy&) = delete;

  // Listens on 127.0.0.1 (a free port) for the link from -> to, forwarding to `destination`.
  // AlreadyExists if the link exists; IOError if no port can be bound.
  StatusOr<HostPort> AddLink(const std::string& from, const std::string& to,
                             const HostPort& destination);

  // Replaces the link's faults. NotFound for an unknown link; InvalidArgument for a
  // probability outside [0, 1] or delay_min > delay_max.
  Status SetFaults(const std::string& from, const std::string& to, const LinkFaults& faults);
  // Every link back to no faults (healing cuts as described above).
  void ClearAllFaults();

  std::vector<LinkInfo> Links() const;
  // Totals over every link.
  LinkStats TotalStats() const;

  void Stop();

  class Impl;

 private:
  explicit NetworkProxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tx::chaos
