#include "common/rpc/server.h"

#include <spdlog/spdlog.h>
#include <thrift/TConfiguration.h>
#include <thrift/TProcessor.h>
#include <thrift/processor/TMultiplexedProcessor.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/server/TThreadedServer.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TServerSocket.h>
#include <thrift/transport/TSocket.h>
#include <thrift/transport/TTransportException.h>

#include <future>

#include "common/rpc/thrift_logging.h"
#include "common/rpc/transport.h"

namespace tx::rpc {

using apache::thrift::TConfiguration;
using apache::thrift::TProcessor;
using apache::thrift::protocol::StoredMessageProtocol;
using apache::thrift::protocol::TMessageType;
using apache::thrift::protocol::TProtocol;
using apache::thrift::server::TServerEventHandler;
using apache::thrift::server::TThreadedServer;
using apache::thrift::transport::TServerSocket;
using apache::thrift::transport::TSocket;
using apache::thrift::transport::TTransport;

namespace {

// One per connection, made by EventHandler::createContext on the connection's thread and handed
// by Thrift to every process() and processContext() call of that connection (so only that thread
// touches it) until deleteContext.
struct ConnectionContext {
  // Accepted while max_connections were open: only the calls of a class of reserved slots are
  // served.
  bool on_reserved_slot = false;
  // The class of reserved slots it was admitted to (its first call was one of that class's and
  // the class had room), or -1. An admitted connection gets reserved_idle_timeout.
  int reserved_class = -1;
  bool idle_timeout_set = false;
};

int TotalReserved(const std::vector<RpcServerOptions::ReservedSlots>& reserved) {
  int total = 0;
  for (const auto& r : reserved) total += r.connections;
  return total;
}

}  // namespace

// The classes of reserved slots and how many connections each holds now. Shared by the event
// handler (a connection's end gives its slot back) and the admission processor (a connection's
// first call takes one). Thread-safe.
class RpcServer::ReservedSlotTable {
 public:
  explicit ReservedSlotTable(std::vector<RpcServerOptions::ReservedSlots> classes)
      : classes_(std::move(classes)), held_(classes_.size()) {}

  int total() const { return TotalReserved(classes_); }

  // The class that admits a connection whose first call is `name`: the first one allowing the
  // call with a slot free (which it takes), or -1.
  int Admit(const std::string& name) {
    for (size_t i = 0; i < classes_.size(); ++i) {
      if (!classes_[i].may_use(name)) continue;
      int held = held_[i].load(std::memory_order_relaxed);
      while (held < classes_[i].connections) {
        if (held_[i].compare_exchange_weak(held, held + 1, std::memory_order_relaxed)) {
          return static_cast<int>(i);
        }
      }
    }
    return -1;
  }
  bool Allows(int class_index, const std::string& name) const {
    return classes_[static_cast<size_t>(class_index)].may_use(name);
  }
  void Release(int class_index) {
    held_[static_cast<size_t>(class_index)].fetch_sub(1, std::memory_order_relaxed);
  }
  std::string Describe() const {
    std::string out;
    for (size_t i = 0; i < classes_.size(); ++i) {
      out += fmt::format("{}{} for {} ({} held)", i == 0 ? "" : ", ", classes_[i].connections,
                         classes_[i].name, held_[i].load(std::memory_order_relaxed));
    }
    return out;
  }

 private:
  const std::vector<RpcServerOptions::ReservedSlots> classes_;
  std::vector<std::atomic<int>> held_;
};

// Learns when serve() is listening (or failed to) and counts connections; marks the connections
// accepted above max_connections and gives them the admission timeout.
class RpcServer::EventHandler final : public TServerEventHandler {
 public:
  EventHandler(const RpcServerOptions& options, std::shared_ptr<ReservedSlotTable> reserved)
      : reserved_(std::move(reserved)),
        max_connections_(options.max_connections),
        reserved_idle_timeout_ms_(static_cast<int>(
            std::min(options.idle_timeout, options.reserved_idle_timeout).count())),
        admission_timeout_ms_(static_cast<int>(
            std::min(options.idle_timeout, options.reserved_admission_timeout).count())) {}

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
    const int64_t open = open_.fetch_add(1, std::memory_order_relaxed) + 1;
    auto* context = new ConnectionContext();
    context->on_reserved_slot = reserved_->total() > 0 && open > max_connections_;
    return context;
  }
  void deleteContext(void* context, std::shared_ptr<TProtocol> /*input*/,
                     std::shared_ptr<TProtocol> /*output*/) override {
    open_.fetch_sub(1, std::memory_order_relaxed);
    auto* c = static_cast<ConnectionContext*>(context);
    if (c != nullptr && c->reserved_class >= 0) reserved_->Release(c->reserved_class);
    delete c;
  }
  // Called before each request is read, with the connection's socket.
  void processContext(void* context, std::shared_ptr<TTransport> transport) override {
    auto* c = static_cast<ConnectionContext*>(context);
    if (c == nullptr || !c->on_reserved_slot || c->idle_timeout_set) return;
    auto* socket = dynamic_cast<TSocket*>(transport.get());
    if (socket == nullptr) return;
    if (c->reserved_class < 0) {
      socket->setRecvTimeout(admission_timeout_ms_);
    } else {
      socket->setRecvTimeout(reserved_idle_timeout_ms_);
      c->idle_timeout_set = true;
    }
  }

 private:
  const std::shared_ptr<ReservedSlotTable> reserved_;
  const int64_t max_connections_;
  const int reserved_idle_timeout_ms_;
  const int admission_timeout_ms_;
  std::once_flag started_once_;
  std::promise<std::string> started_;
  std::atomic<uint64_t> accepted_{0};
  std::atomic<int64_t> open_{0};  // between createContext and deleteContext
};

// Serves every call of an ordinary connection; on a reserved slot (see server.h) reads the
// message name first and closes the connection unless its class of reserved slots (taken at its
// first call) allows the call, then replays the name to the real processor. Stateless apart from
// counters: shared by all connection threads.
class RpcServer::AdmissionProcessor final : public TProcessor {
 public:
  AdmissionProcessor(std::shared_ptr<TProcessor> inner, const RpcServerOptions& options,
                     std::shared_ptr<ReservedSlotTable> reserved)
      : inner_(std::move(inner)),
        reserved_(std::move(reserved)),
        name_(options.name),
        max_connections_(options.max_connections) {}

  bool process(std::shared_ptr<TProtocol> in, std::shared_ptr<TProtocol> out,
               void* connection_context) override {
    auto* c = static_cast<ConnectionContext*>(connection_context);
    if (c == nullptr || !c->on_reserved_slot) return inner_->process(in, out, connection_context);
    std::string name;
    TMessageType type;
    int32_t seqid = 0;
    in->readMessageBegin(name, type, seqid);
    if (c->reserved_class < 0) c->reserved_class = reserved_->Admit(name);
    if (c->reserved_class < 0 || !reserved_->Allows(c->reserved_class, name)) {
      // No reply: the request is left unread, and a client is better served by seeing the
      // connection break (Unavailable, retried with back-off) than by an application error.
      const uint64_t n = refused_.fetch_add(1, std::memory_order_relaxed) + 1;
      if (n == 1 || n % 1000 == 0) {
        spdlog::warn(
            "{} server: {} connection(s) refused at the cap of {} (the slots above it are kept: "
            "{}; this one called {})",
            name_, n, max_connections_, reserved_->Describe(), name.substr(0, 64));
      }
      return false;
    }
    return inner_->process(std::make_shared<StoredMessageProtocol>(in, name, type, seqid), out,
                           connection_context);
  }

  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  const std::shared_ptr<TProcessor> inner_;
  const std::shared_ptr<ReservedSlotTable> reserved_;
  const std::string name_;
  const int max_connections_;
  std::atomic<uint64_t> refused_{0};
};

StatusOr<std::unique_ptr<RpcServer>> RpcServer::Start(
    std::shared_ptr<apache::thrift::TProcessor> processor, const RpcServerOptions& options) {
  TX_CHECK(processor != nullptr);
  TX_CHECK(options.max_connections > 0, "max_connections {}", options.max_connections);
  for (const RpcServerOptions::ReservedSlots& r : options.reserved) {
    TX_CHECK(r.connections >= 0 && r.may_use != nullptr,
             "{} server: reserved slots for {}: {} connections, may_use {}", options.name, r.name,
             r.connections, r.may_use != nullptr ? "set" : "missing");
  }
  RouteThriftLoggingToSpdlog();

  auto socket = std::make_shared<TServerSocket>(options.listen.host, options.listen.port);
  socket->setRecvTimeout(static_cast<int>(options.idle_timeout.count()));
  socket->setSendTimeout(static_cast<int>(options.send_timeout.count()));
  // Lets Stop() interrupt connections blocked reading the next request.
  socket->setInterruptableChildren(true);

  std::shared_ptr<TConfiguration> config = MakeThriftConfiguration(options.max_message_bytes);
  auto reserved = std::make_shared<ReservedSlotTable>(options.reserved);
  auto admission = std::make_shared<AdmissionProcessor>(std::move(processor), options, reserved);
  auto server = std::make_shared<TThreadedServer>(
      admission, socket, std::make_shared<BoundedFramedTransportFactory>(config),
      MakeBinaryProtocolFactory(options.max_message_bytes));
  server->setConcurrentClientLimit(options.max_connections + reserved->total());

  std::unique_ptr<RpcServer> self(new RpcServer());
  self->name_ = options.name;
  self->events_ = std::make_shared<EventHandler>(options, reserved);
  self->admission_ = admission;
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

uint64_t RpcServer::refused_connections() const { return admission_->refused(); }

}  // namespace tx::rpc
