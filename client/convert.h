// Conversions between the wire types (generated from thrift/common.thrift) and libtxclient's
// public types. Internal to libtxclient.

#pragma once

#include <string>
#include <vector>

#include "client/coordinator_channel.h"
#include "common/status.h"
#include "common_types.h"
#include "coordinator_types.h"
#include "txclient/status.h"
#include "txclient/value.h"

namespace tx::client::internal {

api::Value ToWire(const Value& v);
api::Statement ToWire(const Statement& s);

// kInvalidArgument (tx::Status) for a Value with no field or several set, naming `where`.
tx::StatusOr<Value> FromWire(const api::Value& v, const std::string& where);
tx::StatusOr<ResultSet> FromWire(const api::ResultSet& rs, const std::string& where);

// The server's error code as the client's; an unknown number (a newer server) is kInternal.
StatusCode FromWire(api::ErrorCode::type code);

// A server's TxError as a client Status, prefixed with `context` (e.g. "Execute at 'a'").
client::Status FromTxError(const api::TxError& e, const std::string& context);

// A CallResult that is not ok() as a client Status: the server's error, or for a call that
// got no answer kDeadlineExceeded (deadline) or kUnavailable (transport).
client::Status FromCallResult(const CallResult& r, const std::string& context);

}  // namespace tx::client::internal
