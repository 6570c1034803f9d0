#include "tools/txchaos/control.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <thrift/transport/TSocket.h>
#include <unistd.h>

#include <exception>
#include <memory>

#include "common/net.h"
#include "common/rpc/client.h"
#include "common/rpc/transport.h"
#include "common_types.h"

namespace tx::chaos {
namespace {

using apache::thrift::transport::TSocket;

// Replies of the observer's calls are small (a page of 1,000 transactions at most).
constexpr uint32_t kMaxReplyBytes = 16 << 20;

template <typename Client, typename Fn>
Status DirectCall(const HostPort& at, Millis timeout, Fn&& fn) {
  auto socket =
      std::make_shared<TSocket>(at.host, at.port, rpc::MakeThriftConfiguration(kMaxReplyBytes));
  socket->setConnTimeout(static_cast<int>(timeout.count()));
  socket->setRecvTimeout(static_cast<int>(timeout.count()));
  socket->setSendTimeout(static_cast<int>(timeout.count()));
  socket->setNoDelay(true);
  socket->setLinger(false, 0);
  auto protocol = rpc::MakeClientProtocol(socket, kMaxReplyBytes);
  try {
    protocol->getTransport()->open();
    Client client(protocol);
    fn(client);
    protocol->getTransport()->close();
  } catch (const api::TxError& e) {
    return Status::FailedPrecondition(fmt::format("{}: {}", at, DescribeTxError(e)));
  } catch (const std::exception& e) {
    return rpc::StatusFromThriftException(e, at);
  }
  return Status::OK();
}

}  // namespace

std::string DescribeTxError(const api::TxError& e) {
  auto it = api::_ErrorCode_VALUES_TO_NAMES.find(static_cast<int>(e.code));
  std::string code = it == api::_ErrorCode_VALUES_TO_NAMES.end()
                         ? fmt::format("?{}", static_cast<int>(e.code))
                         : std::string(it->second);
  return fmt::format("{}: {}", code, e.message);
}

StatusOr<api::ClusterStatusResponse> GetClusterStatus(const HostPort& replica, Millis timeout) {
  api::ClusterStatusResponse out;
  TX_RETURN_IF_ERROR(DirectCall<api::CoordinatorServiceClient>(
      replica, timeout, [&](api::CoordinatorServiceClient& c) {
        c.GetClusterStatus(out, api::ClusterStatusRequest());
      }));
  return out;
}

StatusOr<api::ListTransactionsResponse> ListTransactions(const HostPort& replica, Millis timeout,
                                                         bool include_begun) {
  api::ListTransactionsResponse out;
  api::ListTransactionsRequest request;
  request.limit = 1000;
  request.include_begun = include_begun;
  TX_RETURN_IF_ERROR(DirectCall<api::CoordinatorServiceClient>(
      replica, timeout,
      [&](api::CoordinatorServiceClient& c) { c.ListTransactions(out, request); }));
  return out;
}

Status RegisterParticipant(const HostPort& leader, const std::string& name, const HostPort& address,
                           Millis timeout) {
  api::RegisterParticipantRequest request;
  request.participant.name = name;
  request.participant.address = ToString(address);
  api::RegisterParticipantResponse out;
  return DirectCall<api::CoordinatorServiceClient>(
      leader, timeout,
      [&](api::CoordinatorServiceClient& c) { c.RegisterParticipant(out, request); });
}

StatusOr<api::GetInfoResponse> GetParticipantInfo(const HostPort& participant, Millis timeout) {
  api::GetInfoResponse out;
  TX_RETURN_IF_ERROR(DirectCall<api::ParticipantServiceClient>(
      participant, timeout,
      [&](api::ParticipantServiceClient& c) { c.GetInfo(out, api::GetInfoRequest()); }));
  return out;
}

StatusOr<api::ListPreparedResponse> ListPrepared(const HostPort& participant, Millis timeout) {
  api::ListPreparedResponse out;
  api::ListPreparedRequest request;
  request.limit = 1000;
  TX_RETURN_IF_ERROR(DirectCall<api::ParticipantServiceClient>(
      participant, timeout,
      [&](api::ParticipantServiceClient& c) { c.ListPrepared(out, request); }));
  return out;
}

StatusOr<int> HttpGet(const HostPort& at, const std::string& path, Millis timeout,
                      std::string* body) {
  TX_ASSIGN_OR_RETURN(int fd, ConnectTcp(at, timeout));
  const std::string request = fmt::format("GET {} HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return Status::Unavailable(fmt::format("cannot send to {}", at));
  }
  std::string response;
  char buf[16 << 10];
  ssize_t n;
  // Bounded: metrics pages are tens of kilobytes.
  while (response.size() < (8u << 20) && (n = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
    response.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  int code = 0;
  if (std::sscanf(response.c_str(), "HTTP/%*d.%*d %d", &code) != 1) {
    return Status::Unavailable(fmt::format("no HTTP status line from {}", at));
  }
  if (body != nullptr) {
    size_t split = response.find("\r\n\r\n");
    *body = split == std::string::npos ? "" : response.substr(split + 4);
  }
  return code;
}

}  // namespace tx::chaos
