// The wire settings that every server and client share, in one place so they cannot drift:
// framed transport and strict binary protocol, with our own size bounds instead of Thrift's
// defaults (100 MB message, 16 MB frame).
//
// Used by RpcServer and RpcConnection; code that builds its own Thrift stack (a test speaking
// raw bytes, a proxy) uses these too.

#pragma once

#include <thrift/TConfiguration.h>
#include <thrift/protocol/TProtocol.h>
#include <thrift/transport/TTransport.h>

#include <cstdint>
#include <memory>

namespace tx::rpc {

// A configuration whose message and frame limits are both `max_message_bytes` (a framed message
// is one frame). Thrift checks a frame's length before allocating for it, and each string or
// container length against what is left of the message.
std::shared_ptr<apache::thrift::TConfiguration> MakeThriftConfiguration(uint32_t max_message_bytes);

// Thrift's TFramedTransportFactory ignores the TConfiguration; this one applies it.
class BoundedFramedTransportFactory final : public apache::thrift::transport::TTransportFactory {
 public:
  explicit BoundedFramedTransportFactory(std::shared_ptr<apache::thrift::TConfiguration> config)
      : config_(std::move(config)) {}
  std::shared_ptr<apache::thrift::transport::TTransport> getTransport(
      std::shared_ptr<apache::thrift::transport::TTransport> transport) override;

 private:
  const std::shared_ptr<apache::thrift::TConfiguration> config_;
};

// Strict binary protocol (reads require the version word, writes send it), with string and
// container lengths limited to `max_message_bytes`.
std::shared_ptr<apache::thrift::protocol::TProtocolFactory> MakeBinaryProtocolFactory(
    uint32_t max_message_bytes);

// The client side of the same: framed + strict binary over `transport` (a TSocket).
std::shared_ptr<apache::thrift::protocol::TProtocol> MakeClientProtocol(
    std::shared_ptr<apache::thrift::transport::TTransport> transport, uint32_t max_message_bytes);

}  // namespace tx::rpc
