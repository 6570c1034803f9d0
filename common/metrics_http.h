// A small HTTP server for Prometheus scrapes and health checks.
//
//   GET /metrics  -> 200, MetricsRegistry::RenderText() (text exposition format 0.0.4)
//   GET /healthz  -> 200 "ok", or 503 with the reason if the health callback returns an error
//   other paths   -> 404; methods other than GET and HEAD on those paths -> 405
//
// Built on libevent's evhttp, running its event loop on a thread of its own, so a slow or idle
// client never blocks a scrape and no request runs on a caller's thread. Requests are bounded:
// headers to kMaxHeaderBytes, bodies to kMaxBodyBytes (GET needs none), and a connection idle or
// slow for kIoTimeoutSeconds is closed. libevent 2.1 cannot cap the number of connections; the
// timeout bounds how long each one lives. Serve this port on a trusted network only.
//
// Thread-safe: Stop() may be called from any thread, more than once; the destructor calls it.

#pragma once

#include <functional>
#include <memory>
#include <thread>

#include "common/metrics.h"
#include "common/net.h"
#include "common/status.h"

struct event;
struct event_base;
struct evhttp;
struct evhttp_request;

namespace tx {

class MetricsHttpServer {
 public:
  static constexpr size_t kMaxHeaderBytes = 8 * 1024;  // a scrape's headers are a few hundred
  static constexpr size_t kMaxBodyBytes = 4 * 1024;    // GET and HEAD carry no body
  static constexpr int kIoTimeoutSeconds = 10;         // Prometheus' default scrape timeout

  // OK when healthy; otherwise /healthz answers 503 with the message. Runs on the server
  // thread, so it must be quick and thread-safe.
  using HealthCheck = std::function<Status()>;

  // Binds `listen` (port 0 picks a free port; see address()) and starts serving `registry`,
  // which must outlive the server. Returns IOError naming the address if it cannot listen.
  static StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const HostPort& listen,
                                                            MetricsRegistry* registry,
                                                            HealthCheck health = nullptr);

  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The bound address, with the real port when 0 was asked for.
  const HostPort& address() const { return address_; }

  // Stops the loop, closes the listener and every open connection, and joins the thread; the
  // port is free when it returns. Requests in flight are dropped (a scrape retries). Idempotent.
  void Stop();

 private:
  MetricsHttpServer(MetricsRegistry* registry, HealthCheck health);
  Status Bind(const HostPort& listen);

  static void HandleMetrics(evhttp_request* req, void* self);
  static void HandleHealth(evhttp_request* req, void* self);
  static void HandleOther(evhttp_request* req, void* self);
  static void HandleWakeup(int fd, short events, void* self);

  // Constant after Start().
  MetricsRegistry* const registry_;
  const HealthCheck health_;
  HostPort address_;
  event_base* base_ = nullptr;
  evhttp* http_ = nullptr;  // owned by the loop thread while it runs, which frees it on exit
  event* wakeup_event_ = nullptr;
  int wakeup_pipe_[2] = {-1, -1};  // Stop() writes a byte; the loop thread breaks out

  std::mutex stop_mu_;  // serializes Stop()
  std::thread thread_;  // GUARDED_BY(stop_mu_) once started
};

}  // namespace tx
