#include "participant/service.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace tx::participant {
namespace {

[[noreturn]] void Throw(const Error& e) { throw ToApi(e); }

template <typename T>
T ValueOrThrow(Result<T> r) {
  if (!r.ok()) Throw(r.error());
  return std::move(r.value());
}

Error InvalidArgument(std::string message) {
  return Error{ErrorCode::kInvalidArgument, std::move(message)};
}

Result<std::vector<Statement>> FromApi(const std::vector<api::Statement>& statements) {
  std::vector<Statement> out;
  out.reserve(statements.size());
  for (size_t i = 0; i < statements.size(); ++i) {
    const api::Statement& s = statements[i];
    Statement st;
    st.sql = s.sql;
    for (size_t j = 0; j < s.params.size(); ++j) {
      Result<Value> v = participant::FromApi(s.params[j]);
      if (!v.ok()) {
        return InvalidArgument(
            fmt::format("statement {}, parameter {}: {}", i, j + 1, v.error().message));
      }
      st.params.push_back(std::move(v.value()));
    }
    for (const auto& [name, value] : s.named_params) {
      Result<Value> v = participant::FromApi(value);
      if (!v.ok()) {
        return InvalidArgument(
            fmt::format("statement {}, parameter {}: {}", i, name, v.error().message));
      }
      st.named_params.emplace_back(name, std::move(v.value()));
    }
    out.push_back(std::move(st));
  }
  return out;
}

api::TxState::type ToApi(TxnState s) { return static_cast<api::TxState::type>(s); }

}  // namespace

Result<Value> FromApi(const api::Value& v) {
  int set =
      v.__isset.null_value + v.__isset.integer + v.__isset.real + v.__isset.text + v.__isset.blob;
  if (set != 1) {
    return InvalidArgument(
        fmt::format("a Value must have exactly one field set, this has {}", set));
  }
  if (v.__isset.integer) return Value(v.integer);
  if (v.__isset.real) return Value(v.real);
  if (v.__isset.text) return Value(v.text);
  if (v.__isset.blob) return Value(Blob{v.blob});
  return Value(std::monostate{});
}

api::Value ToApi(const Value& v) {
  api::Value out;
  switch (v.index()) {
    case 0:
      out.__set_null_value(api::Null());
      break;
    case 1:
      out.__set_integer(std::get<int64_t>(v));
      break;
    case 2:
      out.__set_real(std::get<double>(v));
      break;
    case 3:
      out.__set_text(std::get<std::string>(v));
      break;
    default:
      out.__set_blob(std::get<Blob>(v).bytes);
      break;
  }
  return out;
}

Result<TxnInfo> FromApi(const api::TransactionInfo& info) {
  TxnInfo out;
  const int32_t protocol = RawEnum(info.protocol);
  if (protocol == api::Protocol::TWO_PHASE) {
    out.protocol = Protocol::kTwoPhase;
  } else if (protocol == api::Protocol::THREE_PHASE) {
    out.protocol = Protocol::kThreePhase;
  } else {
    return InvalidArgument(fmt::format("unknown protocol {}", protocol));
  }
  // Bounds the stored record; a transaction spans a handful of participants.
  constexpr size_t kMaxParticipants = 1024;
  if (info.participants.size() > kMaxParticipants) {
    return InvalidArgument(
        fmt::format("{} participants; at most {}", info.participants.size(), kMaxParticipants));
  }
  for (const api::ParticipantRef& p : info.participants) {
    if (p.name.empty()) return InvalidArgument("a participant without a name");
    out.participants.push_back(ParticipantRef{p.name, p.address});
  }
  return out;
}

api::TransactionInfo ToApi(const TxnInfo& info) {
  api::TransactionInfo out;
  out.protocol = info.protocol == Protocol::kThreePhase ? api::Protocol::THREE_PHASE
                                                        : api::Protocol::TWO_PHASE;
  for (const ParticipantRef& p : info.participants) {
    api::ParticipantRef r;
    r.name = p.name;
    r.address = p.address;
    out.participants.push_back(std::move(r));
  }
  return out;
}

api::TxError ToApi(const Error& e) {
  api::TxError out;
  out.code = static_cast<api::ErrorCode::type>(e.code);
  out.message = e.message;
  out.transaction_aborted = e.transaction_aborted;
  return out;
}

api::TransactionStatus ToApi(const TxnStatus& s) {
  api::TransactionStatus out;
  out.txid = s.txid;
  out.state = ToApi(s.state);
  if (s.info.has_value()) out.__set_info(ToApi(*s.info));
  out.rows_written = s.rows_written;
  out.changeset_bytes = s.changeset_bytes;
  out.locks_held = s.locks_held;
  out.state_age_ms = s.state_age_ms;
  if (!s.abort_reason.empty()) out.__set_abort_reason(s.abort_reason);
  out.in_termination = s.in_termination;
  return out;
}

ParticipantServiceHandler::ParticipantServiceHandler(Participant* participant)
    : participant_(participant) {}

void ParticipantServiceHandler::Execute(api::ExecuteResponse& out,
                                        const api::ExecuteRequest& request) {
  std::vector<Statement> statements = ValueOrThrow(FromApi(request.statements));
  std::optional<TxnInfo> info;
  if (request.__isset.info) info = ValueOrThrow(FromApi(request.info));
  std::vector<ResultSet> results = ValueOrThrow(participant_->Execute(
      request.txid, statements, info ? &*info : nullptr,
      request.__isset.sequence ? std::optional<int32_t>(request.sequence) : std::nullopt));
  out.results.reserve(results.size());
  for (ResultSet& rs : results) {
    api::ResultSet r;
    r.columns = std::move(rs.columns);
    r.rows.reserve(rs.rows.size());
    for (auto& row : rs.rows) {
      api::Row ar;
      ar.values.reserve(row.size());
      for (const Value& v : row) ar.values.push_back(ToApi(v));
      r.rows.push_back(std::move(ar));
    }
    r.rows_changed = rs.rows_changed;
    out.results.push_back(std::move(r));
  }
}

void ParticipantServiceHandler::Prepare(api::PrepareResponse& out,
                                        const api::PrepareRequest& request) {
  std::optional<TxnInfo> info;
  if (request.__isset.info) info = ValueOrThrow(FromApi(request.info));
  Vote vote = ValueOrThrow(participant_->Prepare(request.txid, info ? &*info : nullptr));
  switch (vote.kind) {
    case Vote::Kind::kYes:
      out.vote = api::Vote::YES;
      break;
    case Vote::Kind::kReadOnly:
      out.vote = api::Vote::READ_ONLY;
      break;
    case Vote::Kind::kNo:
      out.vote = api::Vote::NO;
      out.__set_reason_code(static_cast<api::ErrorCode::type>(vote.reason_code));
      out.__set_reason(vote.reason);
      break;
  }
}

void ParticipantServiceHandler::Commit(api::CommitResponse& /*out*/,
                                       const api::CommitRequest& request) {
  (void)ValueOrThrow(participant_->Commit(request.txid));
}

void ParticipantServiceHandler::Abort(api::AbortResponse& /*out*/,
                                      const api::AbortRequest& request) {
  (void)ValueOrThrow(participant_->Abort(request.txid));
}

void ParticipantServiceHandler::CommitOnePhase(api::CommitOnePhaseResponse& out,
                                               const api::CommitOnePhaseRequest& request) {
  OnePhaseOutcome o = ValueOrThrow(participant_->CommitOnePhase(request.txid));
  out.outcome = o.committed ? api::Outcome::COMMITTED : api::Outcome::ABORTED;
  if (!o.committed) {
    out.__set_reason_code(static_cast<api::ErrorCode::type>(o.reason_code));
    out.__set_reason(o.reason);
  }
}

void ParticipantServiceHandler::PreCommit(api::PreCommitResponse& out,
                                          const api::PreCommitRequest& request) {
  ThreePhaseState s = ValueOrThrow(participant_->PreCommit(
      request.txid, request.from_termination ? PreCommitSource::kTerminationRound
                                             : PreCommitSource::kCoordinator));
  out.state = ToApi(s.state);
  out.in_termination = s.in_termination;
}

void ParticipantServiceHandler::TerminationState(api::TerminationStateResponse& out,
                                                 const api::TerminationStateRequest& request) {
  ThreePhaseState s = ValueOrThrow(participant_->TerminationState(request.txid, request.join));
  if (!request.join && termination_probe_hook_ &&
      (s.state == TxnState::kPrepared || s.state == TxnState::kPreCommitted)) {
    termination_probe_hook_(request.txid);
  }
  out.state = ToApi(s.state);
  out.in_termination = s.in_termination;
}

void ParticipantServiceHandler::Status(api::TransactionStatus& out,
                                       const api::StatusRequest& request) {
  out = ToApi(ValueOrThrow(participant_->GetStatus(request.txid)));
}

void ParticipantServiceHandler::ListPrepared(api::ListPreparedResponse& out,
                                             const api::ListPreparedRequest& request) {
  if (request.limit <= 0 || request.limit > kMaxListPreparedPage) {
    Throw(InvalidArgument(
        fmt::format("limit must be in [1, {}], got {}", kMaxListPreparedPage, request.limit)));
  }
  TxId after = request.__isset.after_txid ? request.after_txid : 0;
  bool more = false;
  for (const TxnStatus& s :
       participant_->ListPrepared(after, static_cast<size_t>(request.limit), &more)) {
    out.transactions.push_back(ToApi(s));
  }
  out.more = more;
}

void ParticipantServiceHandler::GetInfo(api::GetInfoResponse& out,
                                        const api::GetInfoRequest& /*request*/) {
  Stats s = participant_->GetStats();
  out.name = participant_->options().name;
  out.database = participant_->options().db_path;
  out.active_transactions = s.active_transactions;
  out.prepared_transactions = s.prepared_transactions;
}

}  // namespace tx::participant
