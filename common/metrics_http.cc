#include "common/metrics_http.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tx {
namespace {

// Answers 405 unless the request is a GET or HEAD; returns whether it answered.
bool RejectMethod(evhttp_request* req) {
  evhttp_cmd_type method = evhttp_request_get_command(req);
  if (method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD) return false;
  evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
  evhttp_send_error(req, 405, "Method Not Allowed");
  return true;
}

void Reply(evhttp_request* req, int code, const char* reason, std::string_view content_type,
           std::string_view body) {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Type", std::string(content_type).c_str());
  evbuffer* buf = evbuffer_new();
  if (buf == nullptr) {
    evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
    return;
  }
  if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
    // evhttp sends whatever body it is given; HEAD gets the length of the GET body only.
    evhttp_add_header(headers, "Content-Length", std::to_string(body.size()).c_str());
  } else {
    evbuffer_add(buf, body.data(), body.size());
  }
  evhttp_send_reply(req, code, reason, buf);
  evbuffer_free(buf);
}

}  // namespace

MetricsHttpServer::MetricsHttpServer(MetricsRegistry* registry, HealthCheck health)
    : registry_(registry), health_(std::move(health)) {}

StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const HostPort& listen,
                                                                      MetricsRegistry* registry,
                                                                      HealthCheck health) {
  TX_CHECK(registry != nullptr);
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer(registry, std::move(health)));
  TX_RETURN_IF_ERROR(server->Bind(listen));
  MetricsHttpServer* raw = server.get();
  server->thread_ = std::thread([raw] {
    int rc = event_base_dispatch(raw->base_);
    if (rc == -1) spdlog::error("metrics HTTP server on {}: event loop failed", raw->address_);
    // Here rather than in the destructor, so that the port is closed when Stop() returns.
    evhttp_free(raw->http_);
    raw->http_ = nullptr;
  });
  spdlog::info("metrics HTTP server listening on {}", server->address_);
  return server;
}

Status MetricsHttpServer::Bind(const HostPort& listen) {
  auto fail = [&](std::string_view what, int err) {
    return Status::FromErrno(err, fmt::format("metrics HTTP server on {}: {}", listen, what));
  };
  if (::pipe2(wakeup_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) return fail("pipe2", errno);
  base_ = event_base_new();
  if (base_ == nullptr) return fail("event_base_new", ENOMEM);
  http_ = evhttp_new(base_);
  if (http_ == nullptr) return fail("evhttp_new", ENOMEM);
  evhttp_set_max_headers_size(http_, kMaxHeaderBytes);
  evhttp_set_max_body_size(http_, kMaxBodyBytes);
  evhttp_set_timeout(http_, kIoTimeoutSeconds);
  // Every method reaches the handlers, which answer 405 to all but GET and HEAD (evhttp itself
  // would answer 501 Not Implemented, which is not what a client that sent a POST needs to hear).
  evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                        EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
  evhttp_set_cb(http_, "/metrics", &MetricsHttpServer::HandleMetrics, this);
  evhttp_set_cb(http_, "/healthz", &MetricsHttpServer::HandleHealth, this);
  evhttp_set_gencb(http_, &MetricsHttpServer::HandleOther, this);

  errno = 0;
  evhttp_bound_socket* bound =
      evhttp_bind_socket_with_handle(http_, listen.host.c_str(), listen.port);
  if (bound == nullptr) {
    int err = errno != 0 ? errno : EADDRNOTAVAIL;  // a failed name lookup leaves errno alone
    return fail("cannot listen", err);
  }
  sockaddr_storage addr = {};
  socklen_t len = sizeof(addr);
  if (::getsockname(evhttp_bound_socket_get_fd(bound), reinterpret_cast<sockaddr*>(&addr), &len) !=
      0) {
    return fail("getsockname", errno);
  }
  address_.host = listen.host;
  address_.port = addr.ss_family == AF_INET6
                      ? ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port)
                      : ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);

  wakeup_event_ = event_new(base_, wakeup_pipe_[0], EV_READ | EV_PERSIST,
                            &MetricsHttpServer::HandleWakeup, this);
  if (wakeup_event_ == nullptr || event_add(wakeup_event_, nullptr) != 0) {
    return fail("event_add", ENOMEM);
  }
  return Status::OK();
}

MetricsHttpServer::~MetricsHttpServer() {
  Stop();
  // Also reached when Bind() failed half-way, with no thread ever started.
  if (wakeup_event_ != nullptr) event_free(wakeup_event_);
  if (http_ != nullptr) evhttp_free(http_);  // closes the listener and open connections
  if (base_ != nullptr) event_base_free(base_);
  for (int fd : wakeup_pipe_) {
    if (fd >= 0) ::close(fd);
  }
}

void MetricsHttpServer::Stop() {
  std::lock_guard lock(stop_mu_);
  if (!thread_.joinable()) return;
  char byte = 0;
  // The loop thread owns every libevent object; it notices the byte and breaks out itself.
  while (::write(wakeup_pipe_[1], &byte, 1) < 0 && errno == EINTR) {
  }
  thread_.join();
  spdlog::info("metrics HTTP server on {} stopped", address_);
}

void MetricsHttpServer::HandleWakeup(int /*fd*/, short /*events*/, void* self) {
  auto* server = static_cast<MetricsHttpServer*>(self);
  event_base_loopbreak(server->base_);
}

void MetricsHttpServer::HandleMetrics(evhttp_request* req, void* self) {
  if (RejectMethod(req)) return;
  auto* server = static_cast<MetricsHttpServer*>(self);
  Reply(req, HTTP_OK, "OK", kPrometheusTextContentType, server->registry_->RenderText());
}

void MetricsHttpServer::HandleHealth(evhttp_request* req, void* self) {
  if (RejectMethod(req)) return;
  auto* server = static_cast<MetricsHttpServer*>(self);
  Status health = server->health_ ? server->health_() : Status::OK();
  if (health.ok()) {
    Reply(req, HTTP_OK, "OK", "text/plain; charset=utf-8", "ok\n");
  } else {
    Reply(req, 503, "Service Unavailable", "text/plain; charset=utf-8", health.ToString() + "\n");
  }
}

void MetricsHttpServer::HandleOther(evhttp_request* req, void* /*self*/) {
  evhttp_send_error(req, HTTP_NOTFOUND, "try /metrics or /healthz");
}

}  // namespace tx
