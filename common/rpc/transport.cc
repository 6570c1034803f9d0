#include "common/rpc/transport.h"

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include <limits>

#include "common/check.h"

namespace tx::rpc {

using apache::thrift::TConfiguration;
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TBinaryProtocolFactory;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TTransport;

std::shared_ptr<TConfiguration> MakeThriftConfiguration(uint32_t max_message_bytes) {
  // TConfiguration stores ints.
  TX_CHECK(max_message_bytes > 0 &&
               max_message_bytes <= static_cast<uint32_t>(std::numeric_limits<int>::max()),
           "max_message_bytes {}", max_message_bytes);
  auto limit = static_cast<int>(max_message_bytes);
  return std::make_shared<TConfiguration>(limit, limit);
}

std::shared_ptr<TTransport> BoundedFramedTransportFactory::getTransport(
    std::shared_ptr<TTransport> transport) {
  return std::make_shared<TFramedTransport>(std::move(transport), config_);
}

std::shared_ptr<apache::thrift::protocol::TProtocolFactory> MakeBinaryProtocolFactory(
    uint32_t max_message_bytes) {
  auto limit = static_cast<int32_t>(max_message_bytes);
  return std::make_shared<TBinaryProtocolFactory>(limit, limit, /*strict_read=*/true,
                                                  /*strict_write=*/true);
}

std::shared_ptr<apache::thrift::protocol::TProtocol> MakeClientProtocol(
    std::shared_ptr<TTransport> transport, uint32_t max_message_bytes) {
  auto framed = std::make_shared<TFramedTransport>(std::move(transport),
                                                   MakeThriftConfiguration(max_message_bytes));
  auto limit = static_cast<int32_t>(max_message_bytes);
  return std::make_shared<TBinaryProtocol>(framed, limit, limit, /*strict_read=*/true,
                                           /*strict_write=*/true);
}

}  // namespace tx::rpc
