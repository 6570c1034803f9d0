#include "tools/txchaos/history.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace tx::chaos {

const char* OpResultName(OpResult r) {
  switch (r) {
    case OpResult::kCommitted:
      return "committed";
    case OpResult::kAborted:
      return "aborted";
    case OpResult::kAbandoned:
      return "abandoned";
    case OpResult::kUnknown:
      return "unknown";
    case OpResult::kNoTxn:
      return "no_txn";
  }
  return "?";
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          out += fmt::format("\\u{:04x}", c);  // bytes, not code points: logs stay ASCII
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

namespace {

std::string JsonList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += JsonString(items[i]);
  }
  return out + "]";
}

}  // namespace

History::~History() {
  std::lock_guard<std::mutex> lock(mu_);
  if (file_ != nullptr) std::fclose(file_);
}

Status History::Open(const std::string& path, const std::string& header_members) {
  std::lock_guard<std::mutex> lock(mu_);
  file_ = std::fopen(path.c_str(), "w");
  if (file_ == nullptr) return Status::FromErrno(errno, "opening " + path);
  path_ = path;
  WriteLine(fmt::format("{{\"t\":0,\"type\":\"run\",{}}}", header_members));
  return Status::OK();
}

int64_t History::NowMs() const { return MsAt(std::chrono::steady_clock::now()); }

int64_t History::MsAt(SteadyTime t) const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t - start_).count();
}

void History::WriteLine(const std::string& line) {
  if (file_ == nullptr) return;
  std::fputs(line.c_str(), file_);
  std::fputc('\n', file_);
  std::fflush(file_);
}

uint64_t History::AddOp(OpRecord op) {
  std::lock_guard<std::mutex> lock(mu_);
  if (op.id == 0) op.id = next_op_id_++;
  const uint64_t id = op.id;
  std::string line = fmt::format(
      "{{\"t\":{},\"type\":\"op\",\"id\":{},\"workload\":{},\"worker\":{},\"txid\":{},"
      "\"protocol\":{},\"start\":{},\"written\":{},\"read_only\":{},\"result\":{}",
      op.end_ms, op.id, JsonString(op.workload), op.worker, op.txid, JsonString(op.protocol),
      op.start_ms, JsonList(op.written), JsonList(op.read_only),
      JsonString(OpResultName(op.result)));
  if (!op.key.empty()) line += fmt::format(",\"key\":{}", JsonString(op.key));
  if (op.amount != 0) {
    line += fmt::format(",\"from\":[{},{}],\"to\":[{},{}],\"amount\":{}",
                        JsonString(op.from_participant), op.from_account,
                        JsonString(op.to_participant), op.to_account, op.amount);
  }
  if (!op.code.empty()) line += fmt::format(",\"code\":{}", JsonString(op.code));
  if (!op.detail.empty()) line += fmt::format(",\"detail\":{}", JsonString(op.detail));
  line += "}";
  WriteLine(line);
  ++event_counts_["op"];
  ops_.push_back(std::move(op));
  return id;
}

Status History::ResolveOp(uint64_t id, OpResult result, const std::string& detail) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = ops_.rbegin(); it != ops_.rend(); ++it) {
    if (it->id != id) continue;
    it->result = result;
    it->resolved_later = true;
    if (!detail.empty()) it->detail = detail;
    WriteLine(fmt::format(
        "{{\"t\":{},\"type\":\"resolved\",\"op\":{},\"txid\":{},\"result\":{}{}}}",
        MsAt(std::chrono::steady_clock::now()), id, it->txid, JsonString(OpResultName(result)),
        detail.empty() ? "" : ",\"detail\":" + JsonString(detail)));
    ++event_counts_["resolved"];
    return Status::OK();
  }
  return Status::NotFound(fmt::format("no operation {}", id));
}

void History::AddEvent(const std::string& type, const std::string& members) {
  AddEventAt(NowMs(), type, members);
}

void History::AddEventAt(int64_t t_ms, const std::string& type, const std::string& members) {
  std::lock_guard<std::mutex> lock(mu_);
  WriteLine(fmt::format("{{\"t\":{},\"type\":{}{}{}}}", t_ms, JsonString(type),
                        members.empty() ? "" : ",", members));
  ++event_counts_[type];
}

std::vector<OpRecord> History::Ops() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ops_;
}

uint64_t History::event_count(const std::string& type) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = event_counts_.find(type);
  return it == event_counts_.end() ? 0 : it->second;
}

}  // namespace tx::chaos
