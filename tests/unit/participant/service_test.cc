// The Thrift handler without the network: conversions and typed errors for malformed input.

#include "participant/service.h"

#include <gtest/gtest.h>

#include <cstring>

#include "tests/support/temp_dir.h"

namespace tx::participant {
namespace {

api::Value IntValue(int64_t v) {
  api::Value out;
  out.__set_integer(v);
  return out;
}

TEST(ServiceConversions, ValuesRoundTrip) {
  std::vector<Value> values = {std::monostate{}, int64_t{-7}, 2.5, std::string("text"),
                               Blob{std::string("\0\1", 2)}};
  for (const Value& v : values) {
    Result<Value> back = FromApi(ToApi(v));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(v, back.value());
  }
}

TEST(ServiceConversions, ValueWithNoneOrSeveralFieldsIsRejected) {
  api::Value none;
  EXPECT_EQ(ErrorCode::kInvalidArgument, FromApi(none).error().code);
  api::Value two;
  two.__set_integer(1);
  two.__set_text("1");
  EXPECT_EQ(ErrorCode::kInvalidArgument, FromApi(two).error().code);
}

TEST(ServiceConversions, ErrorsKeepTheirCode) {
  api::TxError e = ToApi(Error{ErrorCode::kLockTimeout, "waited", true});
  EXPECT_EQ(api::ErrorCode::LOCK_TIMEOUT, e.code);
  EXPECT_TRUE(e.transaction_aborted);
  // The engine's codes and the IDL's are the same numbers.
  EXPECT_EQ(static_cast<int>(api::ErrorCode::UNAVAILABLE),
            static_cast<int>(ErrorCode::kUnavailable));
  EXPECT_EQ(static_cast<int>(api::TxState::ABORTED), static_cast<int>(TxnState::kAborted));
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Options o;
    o.name = "svc";
    o.db_path = dir_.path() + "/p.db";
    o.init_sql = "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v INT);";
    auto p = Participant::Open(o);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    p_ = std::move(p).value();
    handler_ = std::make_unique<ParticipantServiceHandler>(p_.get());
  }

  // Runs fn and returns the TxError it threw (or one with code 0 if none).
  template <typename Fn>
  api::TxError Thrown(Fn fn) {
    try {
      fn();
    } catch (const api::TxError& e) {
      return e;
    }
    api::TxError none;
    none.code = static_cast<api::ErrorCode::type>(0);
    return none;
  }

  testing::TempDir dir_;
  std::unique_ptr<Participant> p_;
  std::unique_ptr<ParticipantServiceHandler> handler_;
};

TEST_F(ServiceTest, FullTransactionThroughTheHandler) {
  api::ExecuteRequest req;
  req.txid = 5;
  api::Statement s;
  s.sql = "INSERT INTO t VALUES (:id, :v) RETURNING v * 2";
  s.named_params = {{"id", IntValue(1)}, {"v", IntValue(21)}};
  req.statements = {s};
  api::TransactionInfo info;
  info.participants = {api::ParticipantRef()};
  info.participants[0].name = "svc";
  info.participants[0].address = "127.0.0.1:1";
  req.__set_info(info);
  api::ExecuteResponse out;
  handler_->Execute(out, req);
  ASSERT_EQ(1u, out.results.size());
  ASSERT_EQ(1u, out.results[0].rows.size());
  EXPECT_EQ(42, out.results[0].rows[0].values[0].integer);
  EXPECT_EQ(1, out.results[0].rows_changed);

  api::PrepareRequest p;
  p.txid = 5;
  api::PrepareResponse vote;
  handler_->Prepare(vote, p);
  EXPECT_EQ(api::Vote::YES, vote.vote);
  api::TransactionStatus st;
  api::StatusRequest sr;
  sr.txid = 5;
  handler_->Status(st, sr);
  EXPECT_EQ(api::TxState::PREPARED, st.state);
  ASSERT_TRUE(st.__isset.info);
  EXPECT_EQ("svc", st.info.participants[0].name);
  api::ListPreparedResponse listed;
  handler_->ListPrepared(listed, api::ListPreparedRequest());
  ASSERT_EQ(1u, listed.transactions.size());
  api::CommitRequest c;
  c.txid = 5;
  api::CommitResponse cr;
  handler_->Commit(cr, c);
  api::GetInfoResponse gi;
  handler_->GetInfo(gi, api::GetInfoRequest());
  EXPECT_EQ("svc", gi.name);
  EXPECT_EQ(0, gi.prepared_transactions);
}

TEST_F(ServiceTest, MalformedRequestsGetTypedErrors) {
  api::ExecuteRequest req;
  req.txid = 1;
  api::Statement s;
  s.sql = "SELECT ?";
  s.params = {api::Value()};  // no field set
  req.statements = {s};
  api::ExecuteResponse out;
  EXPECT_EQ(api::ErrorCode::INVALID_ARGUMENT, Thrown([&] { handler_->Execute(out, req); }).code);

  req.statements[0].params = {IntValue(1)};
  req.statements[0].sql = "DROP TABLE t";
  api::TxError e = Thrown([&] { handler_->Execute(out, req); });
  EXPECT_EQ(api::ErrorCode::INVALID_SQL, e.code);
  EXPECT_FALSE(e.transaction_aborted);

  api::ExecuteRequest bad_protocol;
  bad_protocol.txid = 2;
  bad_protocol.statements = {s};
  bad_protocol.statements[0].sql = "SELECT 1";
  bad_protocol.statements[0].params = {};
  // As a peer could send it: 99 is no Protocol (written without an enum-typed store, which
  // would itself be undefined behaviour).
  const int32_t ninety_nine = 99;
  std::memcpy(&bad_protocol.info.protocol, &ninety_nine, sizeof ninety_nine);
  bad_protocol.__isset.info = true;
  EXPECT_EQ(api::ErrorCode::INVALID_ARGUMENT,
            Thrown([&] { handler_->Execute(out, bad_protocol); }).code);

  api::ListPreparedRequest big;
  big.limit = kMaxListPreparedPage + 1;
  api::ListPreparedResponse listed;
  EXPECT_EQ(api::ErrorCode::INVALID_ARGUMENT,
            Thrown([&] { handler_->ListPrepared(listed, big); }).code);

  api::CommitRequest unknown;
  unknown.txid = 77;
  api::CommitResponse cr;
  EXPECT_EQ(api::ErrorCode::UNKNOWN_TRANSACTION,
            Thrown([&] { handler_->Commit(cr, unknown); }).code);
}

}  // namespace
}  // namespace tx::participant
