#include "tools/txchaos/bad_input.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TMultiplexedProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <unistd.h>

#include <functional>
#include <limits>

#include "CoordinatorService.h"
#include "ParticipantService.h"
#include "RaftService.h"
#include "common/net.h"
#include "tools/txchaos/thrift_frame.h"

namespace tx::chaos {
namespace {

using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TMultiplexedProtocol;
using apache::thrift::protocol::TProtocol;
using apache::thrift::transport::TMemoryBuffer;
using SteadyClock = std::chrono::steady_clock;

// Far above any txid a cluster hands out (blocks of 2^20 from 1), so attacks never touch the
// workload's transactions.
constexpr int64_t kAbsurdTxid = int64_t{1} << 61;

enum class Expect { kAnything, kError, kHttpError };

struct Payload {
  std::string name;
  std::string bytes;
  Expect expect = Expect::kAnything;
  bool close_write = true;  // shutdown(SHUT_WR) after sending
};

// A Thrift call as framed bytes, built with the generated client (so it is well-formed).
template <typename Client, typename Fn>
std::string Frame(const std::string& service, Fn&& send) {
  auto buffer = std::make_shared<TMemoryBuffer>();
  std::shared_ptr<TProtocol> protocol = std::make_shared<TBinaryProtocol>(buffer);
  if (!service.empty()) protocol = std::make_shared<TMultiplexedProtocol>(protocol, service);
  Client client(protocol);
  send(client);
  std::string body = buffer->getBufferAsString();
  std::string out;
  AppendFrameLength(&out, static_cast<uint32_t>(body.size()));
  return out + body;
}

// A call whose arguments hold what the generated types cannot (an enum value out of range:
// loading one from an enum-typed field is undefined behaviour), written field by field with the
// protocol's primitives. `args` writes the fields of the call's argument struct.
std::string RawCall(const std::string& name, const std::function<void(TProtocol&)>& args) {
  using apache::thrift::protocol::T_CALL;
  auto buffer = std::make_shared<TMemoryBuffer>();
  TBinaryProtocol p(buffer);
  p.writeMessageBegin(name, T_CALL, 1);
  p.writeStructBegin("args");
  args(p);
  p.writeFieldStop();
  p.writeStructEnd();
  p.writeMessageEnd();
  std::string body = buffer->getBufferAsString();
  std::string out;
  AppendFrameLength(&out, static_cast<uint32_t>(body.size()));
  return out + body;
}

// Writes field `id` as a struct whose fields `inner` writes.
void StructField(TProtocol& p, int16_t id, const std::function<void()>& inner) {
  p.writeFieldBegin("s", apache::thrift::protocol::T_STRUCT, id);
  p.writeStructBegin("s");
  inner();
  p.writeFieldStop();
  p.writeStructEnd();
  p.writeFieldEnd();
}

void I32Field(TProtocol& p, int16_t id, int32_t v) {
  p.writeFieldBegin("i", apache::thrift::protocol::T_I32, id);
  p.writeI32(v);
  p.writeFieldEnd();
}

void I64Field(TProtocol& p, int16_t id, int64_t v) {
  p.writeFieldBegin("i", apache::thrift::protocol::T_I64, id);
  p.writeI64(v);
  p.writeFieldEnd();
}

// A raft_api::MessageBatch (field 1 of Deliver's arguments) with one Message of type 99.
void BatchWithUnknownMessageType(TProtocol& p, int64_t from, int64_t to, int64_t term) {
  StructField(p, 1, [&] {
    I64Field(p, 1, from);
    I64Field(p, 2, to);
    p.writeFieldBegin("messages", apache::thrift::protocol::T_LIST, 4);
    p.writeListBegin(apache::thrift::protocol::T_STRUCT, 1);
    p.writeStructBegin("Message");
    I32Field(p, 1, 99);  // MessageType: no such value
    I64Field(p, 2, from);
    I64Field(p, 3, to);
    I64Field(p, 4, term);
    p.writeFieldStop();
    p.writeStructEnd();
    p.writeListEnd();
    p.writeFieldEnd();
  });
}

api::Value NoTypeValue() { return api::Value(); }  // a union with no field set

std::vector<Payload> CoordinatorAttacks(int replica_id) {
  using C = api::CoordinatorServiceClient;
  std::vector<Payload> out;
  auto call = [&](const std::string& name, std::function<void(C&)> send) {
    out.push_back({name, Frame<C>("", send), Expect::kError, false});
  };
  out.push_back({"Begin(protocol=99)",
                 RawCall("Begin",
                         [](TProtocol& p) {
                           StructField(p, 1, [&] {                            // BeginRequest
                             StructField(p, 1, [&] { I32Field(p, 1, 99); });  // options.protocol
                           });
                         }),
                 Expect::kError, false});
  call("Begin(timeout_ms=-5)", [](C& c) {
    api::BeginRequest r;
    r.options.timeout_ms = -5;
    c.send_Begin(r);
  });
  call("Begin(timeout_ms=INT32_MAX)", [](C& c) {
    api::BeginRequest r;
    r.options.timeout_ms = std::numeric_limits<int32_t>::max();
    c.send_Begin(r);
  });
  call("Commit(txid=-1)", [](C& c) {
    api::CommitTransactionRequest r;
    r.txid = -1;
    r.participants = {"p1", "p2"};
    c.send_Commit(r);
  });
  call("Commit(txid=never issued)", [](C& c) {
    api::CommitTransactionRequest r;
    r.txid = kAbsurdTxid + 17;
    r.participants = {"p1", "p2"};
    c.send_Commit(r);
  });
  call("Commit(100000 participants)", [](C& c) {
    api::CommitTransactionRequest r;
    r.txid = kAbsurdTxid + 18;
    for (int i = 0; i < 100'000; ++i) r.participants.push_back(fmt::format("x{}", i));
    c.send_Commit(r);
  });
  out.push_back({"Commit(protocol=-4)",
                 RawCall("Commit",
                         [](TProtocol& p) {
                           StructField(p, 1, [&] {  // CommitTransactionRequest
                             I64Field(p, 1, kAbsurdTxid + 19);
                             p.writeFieldBegin("participants", apache::thrift::protocol::T_LIST, 2);
                             p.writeListBegin(apache::thrift::protocol::T_STRING, 1);
                             p.writeString("p1");
                             p.writeListEnd();
                             p.writeFieldEnd();
                             I32Field(p, 3, -4);  // protocol: no such value
                           });
                         }),
                 Expect::kError, false});
  call("Abort(txid=-9)", [](C& c) {
    api::AbortTransactionRequest r;
    r.txid = -9;
    c.send_Abort(r);
  });
  call("GetOutcome(txid=0)", [](C& c) {
    api::GetOutcomeRequest r;
    r.txid = 0;
    c.send_GetOutcome(r);
  });
  call("Resolve(txid=-3)", [](C& c) {
    api::ResolveRequest r;
    r.txid = -3;
    r.participant = "p1";
    c.send_Resolve(r);
  });
  call("Resolve(txid=never issued)", [](C& c) {
    api::ResolveRequest r;
    r.txid = std::numeric_limits<int64_t>::max();
    r.participant = "p1";
    c.send_Resolve(r);
  });
  call("RegisterParticipant(bad name and address)", [](C& c) {
    api::RegisterParticipantRequest r;
    r.participant.name = std::string(5000, 'a') + "\xff\x01";
    r.participant.address = "not an address";
    c.send_RegisterParticipant(r);
  });
  call("ListTransactions(limit=-1)", [](C& c) {
    api::ListTransactionsRequest r;
    r.limit = -1;
    c.send_ListTransactions(r);
  });
  call("GetTransaction(txid=-1)", [](C& c) {
    api::GetTransactionRequest r;
    r.txid = -1;
    c.send_GetTransaction(r);
  });
  // An unknown service name and an unknown method: TApplicationException.
  out.push_back(
      {"unknown service",
       Frame<C>("nosuchservice", [](C& c) { c.send_GetOutcome(api::GetOutcomeRequest()); }),
       Expect::kError, false});
  {
    std::string body;
    AppendFrameLength(&body, 0);  // placeholder, fixed below
    std::string msg;
    const std::string name = "Frobnicate";
    const uint32_t version = 0x80010001u;
    for (int shift = 24; shift >= 0; shift -= 8) msg.push_back(static_cast<char>(version >> shift));
    for (int shift = 24; shift >= 0; shift -= 8) {
      msg.push_back(static_cast<char>(name.size() >> shift));
    }
    msg += name;
    msg += std::string("\0\0\0\1", 4);  // seqid
    msg.push_back('\0');                // STOP: empty args
    std::string framed;
    AppendFrameLength(&framed, static_cast<uint32_t>(msg.size()));
    out.push_back({"unknown method", framed + msg, Expect::kError, false});
  }
  using R = raft_api::RaftServiceClient;
  out.push_back(
      {"raft:Deliver(to another replica)",
       RawCall("raft:Deliver",
               [](TProtocol& p) { BatchWithUnknownMessageType(p, 1000, 999, int64_t{1} << 62); }),
       Expect::kError, false});
  out.push_back(
      {"raft:Deliver(unknown message type)",
       RawCall("raft:Deliver",
               [replica_id](TProtocol& p) { BatchWithUnknownMessageType(p, 1000, replica_id, 1); }),
       Expect::kError, false});
  out.push_back({"raft:Deliver(negative ids)",
                 Frame<R>("raft",
                          [](R& c) {
                            raft_api::MessageBatch b;
                            b.from_node = -1;
                            b.to_node = -1;
                            c.send_Deliver(b);
                          }),
                 Expect::kError, false});
  return out;
}

std::vector<Payload> ParticipantAttacks(std::mt19937_64& rng) {
  using P = api::ParticipantServiceClient;
  std::vector<Payload> out;
  const int64_t fresh = kAbsurdTxid + static_cast<int64_t>(rng() % (int64_t{1} << 40));
  auto call = [&](const std::string& name, std::function<void(P&)> send) {
    out.push_back({name, Frame<P>("", send), Expect::kError, false});
  };
  auto stmt = [](std::string sql) {
    api::Statement s;
    s.sql = std::move(sql);
    return s;
  };
  call("Execute(txid=-1)", [&](P& c) {
    api::ExecuteRequest r;
    r.txid = -1;
    r.statements = {stmt("SELECT 1")};
    c.send_Execute(r);
  });
  call("Execute(invalid SQL)", [&](P& c) {
    api::ExecuteRequest r;
    r.txid = fresh;
    std::string junk;
    for (int i = 0; i < 2000; ++i) junk.push_back(static_cast<char>('!' + rng() % 90));
    r.statements = {stmt(junk)};
    c.send_Execute(r);
  });
  call("Execute(1001 statements)", [&](P& c) {
    api::ExecuteRequest r;
    r.txid = fresh + 1;
    for (int i = 0; i < 1001; ++i) r.statements.push_back(stmt("SELECT 1"));
    c.send_Execute(r);
  });
  call("Execute(Value with no type)", [&](P& c) {
    api::ExecuteRequest r;
    r.txid = fresh + 2;
    api::Statement s = stmt("SELECT ?");
    s.params.push_back(NoTypeValue());
    r.statements = {s};
    c.send_Execute(r);
  });
  call("Execute(no statements)", [&](P& c) {
    api::ExecuteRequest r;
    r.txid = fresh + 3;
    c.send_Execute(r);
  });
  call("Execute(DDL)", [&](P& c) {
    api::ExecuteRequest r;
    r.txid = fresh + 4;
    r.statements = {stmt("DROP TABLE accounts")};
    c.send_Execute(r);
  });
  call("Prepare(txid=-1)", [](P& c) {
    api::PrepareRequest r;
    r.txid = -1;
    c.send_Prepare(r);
  });
  call("Commit(txid=unknown)", [&](P& c) {
    api::CommitRequest r;
    r.txid = fresh + 5;
    c.send_Commit(r);
  });
  call("Commit(txid=0)", [](P& c) {
    api::CommitRequest r;
    r.txid = 0;
    c.send_Commit(r);
  });
  call("Abort(txid=-5)", [](P& c) {
    api::AbortRequest r;
    r.txid = -5;
    c.send_Abort(r);
  });
  call("CommitOnePhase(txid=-2)", [](P& c) {
    api::CommitOnePhaseRequest r;
    r.txid = -2;
    c.send_CommitOnePhase(r);
  });
  call("Status(txid=-1)", [](P& c) {
    api::StatusRequest r;
    r.txid = -1;
    c.send_Status(r);
  });
  call("ListPrepared(limit=-7)", [](P& c) {
    api::ListPreparedRequest r;
    r.limit = -7;
    c.send_ListPrepared(r);
  });
  return out;
}

std::vector<Payload> HttpAttacks(std::mt19937_64& rng) {
  std::vector<Payload> out;
  std::string junk;
  const size_t n = 1 + rng() % 2048;
  for (size_t i = 0; i < n; ++i) junk.push_back(static_cast<char>(rng() & 0xff));
  out.push_back({"http:garbage", junk, Expect::kHttpError, true});
  out.push_back({"http:100KB URL",
                 "GET /" + std::string(100'000, 'a') + " HTTP/1.0\r\nHost: x\r\n\r\n",
                 Expect::kHttpError, true});
  std::string headers = "GET /metrics HTTP/1.0\r\n";
  for (int i = 0; i < 400; ++i)
    headers += fmt::format("X-Junk-{}: {}\r\n", i, std::string(40, 'j'));
  out.push_back({"http:20KB headers", headers + "\r\n", Expect::kHttpError, true});
  out.push_back({"http:POST 1GB",
                 "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n" +
                     std::string(10'000, 'b'),
                 Expect::kHttpError, true});
  out.push_back({"http:bad method", "FROB /metrics HTTP/1.0\r\n\r\n", Expect::kHttpError, true});
  return out;
}

std::vector<Payload> FrameAttacks(const std::string& valid_frame, std::mt19937_64& rng) {
  std::vector<Payload> out;
  std::string junk;
  const size_t n = 1 + rng() % 4096;
  for (size_t i = 0; i < n; ++i) junk.push_back(static_cast<char>(rng() & 0xff));
  out.push_back({"garbage", junk, Expect::kAnything, true});
  // Cut a valid frame anywhere before its end.
  const size_t cut = 1 + rng() % (valid_frame.size() - 1);
  out.push_back({"truncated", valid_frame.substr(0, cut), Expect::kAnything, true});
  std::string oversize;
  const uint32_t length =
      (16u << 20) + 1 + static_cast<uint32_t>(rng() % (0xffffffffu - (16u << 20)));
  AppendFrameLength(&oversize, length);
  oversize += valid_frame.substr(4);
  out.push_back({"oversize", oversize, Expect::kAnything, true});
  // A frame whose payload is not a Thrift message at all.
  std::string not_thrift;
  AppendFrameLength(&not_thrift, static_cast<uint32_t>(junk.size()));
  out.push_back({"framed garbage", not_thrift + junk, Expect::kAnything, true});
  return out;
}

int Connect(const HostPort& at, std::chrono::milliseconds timeout) {
  StatusOr<int> fd = ConnectTcp(at, timeout);
  return fd.ok() ? *fd : -1;
}

// Reads until the peer closes, a whole Thrift frame (when `thrift`) or an HTTP status line has
// arrived, or the deadline. Returns the bytes; *closed tells whether the peer closed.
std::string ReadAnswer(int fd, bool thrift, SteadyClock::time_point deadline, bool* closed) {
  std::string in;
  *closed = false;
  while (true) {
    if (thrift && in.size() >= 4 && in.size() - 4 >= ReadFrameLength(in.data())) return in;
    if (!thrift && in.find("\r\n") != std::string::npos) return in;
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) return in;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[16 << 10];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      *closed = true;
      return in;
    }
    in.append(buf, static_cast<size_t>(n));
    if (in.size() > (1u << 20)) return in;  // enough to judge
  }
}

// What a Thrift answer was: "error" (TApplicationException, or a declared exception in the
// result struct), "reply" (success), or "garbled".
std::string ClassifyThriftReply(const std::string& frame) {
  if (frame.size() < 4) return "garbled";
  std::string_view payload = std::string_view(frame).substr(4);
  std::optional<MessageHeader> h = ParseMessageHeader(payload);
  if (!h.has_value()) return "garbled";
  if (h->type == MessageType::kException) return "error";
  if (h->type != MessageType::kReply) return "garbled";
  // The result struct: field 0 is the success value, fields >= 1 the declared exceptions; a
  // void method's success is an empty struct (STOP at once).
  const size_t at = 8 + h->name.size() + 4;
  if (payload.size() <= at) return "garbled";
  const uint8_t field_type = static_cast<uint8_t>(payload[at]);
  if (field_type == 0) return "reply";
  if (payload.size() < at + 3) return "garbled";
  const int16_t field_id = static_cast<int16_t>((static_cast<uint8_t>(payload[at + 1]) << 8) |
                                                static_cast<uint8_t>(payload[at + 2]));
  return field_id == 0 ? "reply" : "error";
}

}  // namespace

AttackResult BadInputSender::Attack(const BadInputTarget& target, uint64_t index,
                                    std::mt19937_64& rng, std::chrono::milliseconds timeout) {
  std::vector<Payload> payloads;
  if (target.kind == BadInputTarget::Kind::kMetrics) {
    payloads = HttpAttacks(rng);
  } else {
    std::vector<Payload> calls = target.kind == BadInputTarget::Kind::kCoordinator
                                     ? CoordinatorAttacks(target.replica_id)
                                     : ParticipantAttacks(rng);
    // Frame-level attacks are built from one of the calls, and weigh as much as all calls.
    std::vector<Payload> frames = FrameAttacks(calls[rng() % calls.size()].bytes, rng);
    const size_t total = calls.size() * 2;
    const size_t pick = index % total;
    if (pick >= calls.size()) {
      payloads = {frames[pick % frames.size()]};
    } else {
      payloads = {calls[pick]};
    }
    index = 0;
  }
  const Payload& p = payloads[index % payloads.size()];
  AttackResult r;
  r.attack = p.name;
  int fd = Connect(target.address, timeout);
  if (fd < 0) {
    r.outcome = "refused";
    return r;
  }
  (void)::send(fd, p.bytes.data(), p.bytes.size(), MSG_NOSIGNAL);  // may fail: closed early
  if (p.close_write) ::shutdown(fd, SHUT_WR);
  bool closed = false;
  const std::string answer = ReadAnswer(fd, target.kind != BadInputTarget::Kind::kMetrics,
                                        SteadyClock::now() + timeout, &closed);
  ::close(fd);
  if (target.kind == BadInputTarget::Kind::kMetrics) {
    int code = 0;
    if (std::sscanf(answer.c_str(), "HTTP/%*d.%*d %d", &code) == 1) {
      r.outcome = fmt::format("http-{}xx", code / 100);
      r.violation = code < 400;
    } else {
      r.outcome = closed ? "closed" : "hang";
      r.violation = !closed;
    }
    return r;
  }
  if (answer.empty()) {
    r.outcome = closed ? "closed" : "hang";
    r.violation = !closed;
    return r;
  }
  const std::string kind = ClassifyThriftReply(answer);
  if (p.expect == Expect::kError) {
    r.outcome = kind == "reply" ? "accepted" : kind;
    r.violation = kind == "reply";
  } else {
    r.outcome = kind;
  }
  return r;
}

BadInputSender::BadInputSender(std::vector<BadInputTarget> targets, uint64_t seed, History* history)
    : targets_(std::move(targets)), seed_(seed), history_(history) {}

BadInputSender::~BadInputSender() { Stop(); }

void BadInputSender::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void BadInputSender::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

BadInputStats BadInputSender::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BadInputSender::Loop() {
  std::mt19937_64 rng(seed_);
  while (!stop_.load() && !targets_.empty()) {
    const BadInputTarget& target = targets_[rng() % targets_.size()];
    const int64_t t = history_->NowMs();
    AttackResult r = Attack(target, rng(), rng);
    history_->AddEventAt(
        t, "bad_input",
        fmt::format("\"node\":{},\"port\":{},\"attack\":{},\"outcome\":{}", JsonString(target.node),
                    target.address.port, JsonString(r.attack), JsonString(r.outcome)));
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.attacks;
      ++stats_.by_outcome[r.outcome];
      if (r.violation) {
        ++stats_.violation_count;
        if (stats_.violations.size() < 20) {
          stats_.violations.push_back(fmt::format("{} on {} ({}): {}", r.attack, target.node,
                                                  ToString(target.address), r.outcome));
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 80));
  }
}

}  // namespace tx::chaos
