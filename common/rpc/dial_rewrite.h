// Where an outgoing RPC connection really goes: a process-wide table mapping the address a caller
// dials (a Raft peer, a participant, a coordinator, as configured, registered, advertised or
// hinted) to the address actually connected to.
//
// It exists for failure injection. txchaos tells every process of a test cluster to reach each of
// its peers through a proxy port of its own, one per directed link, so that the proxy can cut,
// delay, drop and duplicate that link's traffic; every address the processes configure, register
// in the directory, advertise to Raft peers and return as leader hints stays the real one, so the
// same address means the same process everywhere. Programs load it at start-up:
//
//   TX_DIAL_REWRITE="127.0.0.1:7001=127.0.0.1:40001,127.0.0.1:7101=127.0.0.1:40007"
//
// Every dial goes through RpcConnection::Open (common/rpc/client.h), which asks DialAddress().
// With no table (the normal case) that costs one relaxed atomic load per connection made.
//
// Thread-safe. Changing the table does not touch connections already open.

#pragma once

#include <cstddef>
#include <map>
#include <string_view>

#include "common/net.h"
#include "common/status.h"

namespace tx::rpc {

// A cluster has a handful of processes and so a few tens of links; more is a mistake in the
// caller, and the bound keeps a bad environment variable from building a huge table.
inline constexpr size_t kMaxDialRewrites = 1024;

// The environment variable read by LoadDialRewritesFromEnv().
inline constexpr const char* kDialRewriteEnv = "TX_DIAL_REWRITE";

using DialRewrites = std::map<HostPort, HostPort>;

// "from=to,from=to" (each a host:port, port non-zero, every "from" once; spaces around items
// allowed). Empty text gives an empty table. InvalidArgument quoting the bad item otherwise.
StatusOr<DialRewrites> ParseDialRewrites(std::string_view text);

// Replaces the table (an empty one turns rewriting off). InvalidArgument past kMaxDialRewrites or
// for a port 0; the table is unchanged on error.
Status SetDialRewrites(DialRewrites rewrites);

// Parses $TX_DIAL_REWRITE, if set, into the table. Programs call this at start-up; an error
// should stop them.
Status LoadDialRewritesFromEnv();

// The address to connect to for `endpoint`: its rewrite, or itself.
HostPort DialAddress(const HostPort& endpoint);

}  // namespace tx::rpc
