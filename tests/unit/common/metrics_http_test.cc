#include "common/metrics_http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "common/net.h"

namespace tx {
namespace {

// Connects to 127.0.0.1:port with a 10 s receive timeout; -1 on failure.
int Connect(uint16_t port) {
  StatusOr<int> fd = ConnectTcp({"127.0.0.1", port}, std::chrono::seconds(10));
  return fd.ok() ? *fd : -1;
}

struct HttpResponse {
  int status = 0;
  std::string headers;
  std::string body;
};

// Sends `request` verbatim and reads the response until the server closes the connection.
HttpResponse RawRequest(uint16_t port, const std::string& request) {
  HttpResponse response;
  int fd = Connect(port);
  if (fd < 0) return response;
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[4096];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t end_of_headers = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || end_of_headers == std::string::npos) return response;
  response.status = std::stoi(raw.substr(9, 3));
  response.headers = raw.substr(0, end_of_headers);
  response.body = raw.substr(end_of_headers + 4);
  return response;
}

HttpResponse Get(uint16_t port, const std::string& path) {
  return RawRequest(port, "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
}

std::unique_ptr<MetricsHttpServer> StartOrDie(MetricsRegistry* registry,
                                              MetricsHttpServer::HealthCheck health = nullptr) {
  auto server = MetricsHttpServer::Start({"127.0.0.1", 0}, registry, std::move(health));
  TX_CHECK(server.ok(), "{}", server.status().ToString());
  return std::move(server).value();
}

TEST(MetricsHttpServer, ServesMetricsOverLoopback) {
  MetricsRegistry registry;
  registry.AddCounter("tx_scraped_total", "Scrape test.")->Increment(5);
  auto server = StartOrDie(&registry);
  ASSERT_NE(0, server->address().port);
  EXPECT_EQ("127.0.0.1", server->address().host);
  HttpResponse r = Get(server->address().port, "/metrics");
  EXPECT_EQ(200, r.status);
  EXPECT_NE(std::string::npos, r.headers.find("Content-Type: text/plain; version=0.0.4"))
      << r.headers;
  EXPECT_EQ(registry.RenderText(), r.body);
  EXPECT_NE(std::string::npos, r.body.find("tx_scraped_total 5\n"));
  // A later scrape sees later values.
  registry.AddCounter("tx_scraped_total", "Scrape test.")->Increment();
  EXPECT_NE(std::string::npos,
            Get(server->address().port, "/metrics").body.find("tx_scraped_total 6\n"));
}

TEST(MetricsHttpServer, HealthzAnswersOk) {
  MetricsRegistry registry;
  auto server = StartOrDie(&registry);
  HttpResponse r = Get(server->address().port, "/healthz");
  EXPECT_EQ(200, r.status);
  EXPECT_EQ("ok\n", r.body);
}

TEST(MetricsHttpServer, HealthzReportsUnhealthyAs503) {
  MetricsRegistry registry;
  std::atomic<bool> healthy{false};
  auto server = StartOrDie(
      &registry, [&] { return healthy ? Status::OK() : Status::Unavailable("no leader known"); });
  HttpResponse r = Get(server->address().port, "/healthz");
  EXPECT_EQ(503, r.status);
  EXPECT_EQ("Unavailable: no leader known\n", r.body);
  healthy = true;
  EXPECT_EQ(200, Get(server->address().port, "/healthz").status);
}

TEST(MetricsHttpServer, QueryStringIsIgnored) {
  MetricsRegistry registry;
  auto server = StartOrDie(&registry);
  EXPECT_EQ(200, Get(server->address().port, "/healthz?verbose=1").status);
}

TEST(MetricsHttpServer, UnknownPathIs404AndOtherMethodsAre405) {
  MetricsRegistry registry;
  auto server = StartOrDie(&registry);
  uint16_t port = server->address().port;
  EXPECT_EQ(404, Get(port, "/nope").status);
  EXPECT_EQ(405, RawRequest(port, "POST /metrics HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi").status);
  EXPECT_EQ(200, Get(port, "/metrics").status);
}

TEST(MetricsHttpServer, HeadHasHeadersButNoBody) {
  MetricsRegistry registry;
  registry.AddCounter("tx_c_total", "C.")->Increment();
  auto server = StartOrDie(&registry);
  HttpResponse r = RawRequest(server->address().port, "HEAD /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(200, r.status);
  EXPECT_EQ("", r.body);
  EXPECT_NE(std::string::npos,
            r.headers.find(fmt::format("Content-Length: {}", registry.RenderText().size())))
      << r.headers;
}

TEST(MetricsHttpServer, GarbageAndOversizeRequestsAreRefusedAndServerKeepsServing) {
  MetricsRegistry registry;
  auto server = StartOrDie(&registry);
  uint16_t port = server->address().port;
  static constexpr char kGarbage[] = "\x16\x03\x01\x00\xff garbage\r\n\r\n";
  HttpResponse garbage = RawRequest(port, std::string(kGarbage, sizeof(kGarbage) - 1));
  EXPECT_TRUE(garbage.status == 0 || garbage.status == 400) << garbage.status;
  std::string huge_header = "GET /metrics HTTP/1.0\r\nX-Filler: " +
                            std::string(MetricsHttpServer::kMaxHeaderBytes * 2, 'a') + "\r\n\r\n";
  HttpResponse oversize = RawRequest(port, huge_header);
  EXPECT_NE(200, oversize.status);
  EXPECT_EQ(200, Get(port, "/healthz").status);
}

TEST(MetricsHttpServer, IdleClientDoesNotBlockOthers) {
  MetricsRegistry registry;
  auto server = StartOrDie(&registry);
  uint16_t port = server->address().port;
  int idle = Connect(port);
  ASSERT_GE(idle, 0);
  ASSERT_EQ(4, ::send(idle, "GET ", 4, MSG_NOSIGNAL));  // and never finishes the request
  EXPECT_EQ(200, Get(port, "/healthz").status);
  ::close(idle);
}

TEST(MetricsHttpServer, StopClosesThePortAndIsIdempotent) {
  MetricsRegistry registry;
  auto server = StartOrDie(&registry);
  uint16_t port = server->address().port;
  int open_conn = Connect(port);  // an open connection must not hold up Stop()
  ASSERT_GE(open_conn, 0);
  server->Stop();
  server->Stop();
  EXPECT_EQ(-1, Connect(port));
  ::close(open_conn);
  // The same port can be served again at once.
  auto again = MetricsHttpServer::Start({"127.0.0.1", port}, &registry);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(200, Get(port, "/healthz").status);
}

TEST(MetricsHttpServer, BusyPortIsAnError) {
  MetricsRegistry registry;
  auto first = StartOrDie(&registry);
  auto second = MetricsHttpServer::Start(first->address(), &registry);
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(second.status().IsIOError()) << second.status().ToString();
  EXPECT_NE(std::string::npos, second.status().message().find(ToString(first->address())))
      << second.status().ToString();
}

TEST(MetricsHttpServer, UnresolvableHostIsAnError) {
  MetricsRegistry registry;
  auto server = MetricsHttpServer::Start({"no-such-host.invalid", 0}, &registry);
  EXPECT_FALSE(server.ok());
}

}  // namespace
}  // namespace tx
