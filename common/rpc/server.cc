#include "common/rpc/server.h"

#include <spdlog/spdlog.h>
#include <thrift/TConfiguration.h>
#include <thrift/TProcessor.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/server/TThreadedServer.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TServerSocket.h>
#include <thrift/transport/TTransportException.h>

#include <future>

#include "common/rpc/thrift_logging.h"
#include "common/rpc/transport.h"

namespace tx::rpc {

using apache::thrift::TConfiguration;
using apache::thrift::protocol::TProtocol;
using apache::thrift::server::TServerEventHandler;
using apache::thrift::server::TThreadedServer;
using apache::thrift::transport::TServerSocket;
using apache::thrift::transport::TTransport;

// Learns when serve() is listening (or failed to) and counts connections.
class RpcServer::EventHandler final : public TServerEventHandler {
 public:
  // The first call wins: "" once listening, else why serve() could not listen. Returns whether
  // this call was the first.
  bool SignalStarted(const std::string& error) {
    bool first = false;
    std::call_once(started_once_, [&] {
      started_.set_value(error);
      first = true;
    });
    return first;
  }
  std::future<std::string> started() { return started_.get_future(); }
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }

  void preServe() override { (void)SignalStarted(""); }
  void* createContext(std::shared_ptr<TProtocol> /*input*/,
                      std::shared_ptr<TProtocol> /*output*/) override {
    accepted_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }

 private:
  std::once_flag started_once_;
  std::promise<std::string> started_;
  std::atomic<uint64_t> accepted_{0};
};

StatusOr<std::unique_ptr<RpcServer>> RpcServer::Start(
    std::shared_ptr<apache::thrift::TProcessor> processor, const RpcServerOptions& options) {
  TX_CHECK(processor != nullptr);
  TX_CHECK(options.max_connections > 0, "max_connections {}", options.max_connections);
  RouteThriftLoggingToSpdlog();

  auto socket = std::make_shared<TServerSocket>(options.listen.host, options.listen.port);
  socket->setRecvTimeout(static_cast<int>(options.idle_timeout.count()));
  socket->setSendTimeout(static_cast<int>(options.send_timeout.count()));
  // Lets Stop() interrupt connections blocked reading the next request.
  socket->setInterruptableChildren(true);

  std::shared_ptr<TConfiguration> config = MakeThriftConfiguration(options.max_message_bytes);
  auto server = std::make_shared<TThreadedServer>(
      std::move(processor), socket, std::make_shared<BoundedFramedTransportFactory>(config),
      MakeBinaryProtocolFactory(options.max_message_bytes));
  server->setConcurrentClientLimit(options.max_connections);

  std::unique_ptr<RpcServer> self(new RpcServer());
  self->name_ = options.name;
  self->events_ = std::make_shared<EventHandler>();
  self->server_ = server;
  server->setServerEventHandler(self->events_);

  std::future<std::string> started = self->events_->started();
  self->thread_ = std::thread([server, events = self->events_, name = options.name] {
    try {
      server->serve();
    } catch (const std::exception& e) {
      // Before preServe: listen() failed, and Start() reports it. After: the accept loop died.
      if (!events->SignalStarted(e.what())) {
        spdlog::error("{} server stopped serving: {}", name, e.what());
      }
    }
  });
  if (std::string error = started.get(); !error.empty()) {
    self->thread_.join();
    return Status::IOError(
        fmt::format("{} server cannot listen on {}: {}", options.name, options.listen, error));
  }
  self->address_ = HostPort{options.listen.host, static_cast<uint16_t>(socket->getPort())};
  spdlog::info("{} server listening on {}", self->name_, self->address_);
  return self;
}

RpcServer::~RpcServer() { Stop(); }

void RpcServer::Stop() {
  std::lock_guard lock(stop_mu_);
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
  spdlog::info("{} server on {} stopped", name_, address_);
}

uint64_t RpcServer::accepted_connections() const { return events_->accepted(); }

int64_t RpcServer::open_connections() const { return server_->getConcurrentClientCount(); }

}  // namespace tx::rpc
