// Routes Apache Thrift's own diagnostics (apache::thrift::GlobalOutput, which prints to stderr
// by default) into spdlog, prefixed "thrift: ".
//
// Client-side connection noise (TSocket failing to connect, read or write: our callers get the
// same failure as a Status and decide what to log) goes to debug; everything else, such as a
// server connection dropped for a bad frame or a handler exception, goes to warn.
//
// Idempotent and thread-safe. RpcServer and RpcConnection call it; programs may call it early.

#pragma once

namespace tx::rpc {

void RouteThriftLoggingToSpdlog();

}  // namespace tx::rpc
