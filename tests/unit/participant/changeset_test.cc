// Changeset capture and apply on real SQLite files, and the locks derived from changesets.

#include "participant/changeset.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "participant/lock_keys.h"
#include "tests/support/temp_dir.h"

namespace tx::participant {
namespace {

class ChangesetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.path() + "/db.sqlite";
    auto conn = Connection::Open(path_, /*foreign_keys=*/true, &schema_);
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    conn_ = std::move(conn).value();
  }

  void Sql(const std::string& sql) {
    Status s = Exec(conn_->db(), sql);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  int64_t Int(const std::string& sql) {
    StatusOr<StmtHandle> stmt = PrepareStmt(conn_->db(), sql);
    EXPECT_TRUE(stmt.ok()) << stmt.status().ToString();
    if (!stmt.ok()) return -1;
    EXPECT_EQ(SQLITE_ROW, sqlite3_step(stmt->get())) << sql;
    return sqlite3_column_int64(stmt->get(), 0);
  }

  // Runs `sql` in a transaction that is rolled back, returning what it changed and, if
  // asked, the locks derived in that state.
  std::string Capture(const std::string& sql, std::vector<LockRequest>* locks = nullptr) {
    EXPECT_TRUE(Exec(conn_->db(), "BEGIN").ok());
    sqlite3_session* session = nullptr;
    EXPECT_EQ(SQLITE_OK, sqlite3session_create(conn_->db(), "main", &session));
    EXPECT_EQ(SQLITE_OK, sqlite3session_attach(session, nullptr));
    Status s = Exec(conn_->db(), sql);
    EXPECT_TRUE(s.ok()) << s.ToString();
    int n = 0;
    void* p = nullptr;
    EXPECT_EQ(SQLITE_OK, sqlite3session_changeset(session, &n, &p));
    std::string cs(static_cast<char*>(p), static_cast<size_t>(n));
    sqlite3_free(p);
    sqlite3session_delete(session);
    if (locks != nullptr) {
      Result<std::vector<LockRequest>> derived = DeriveLocks(conn_.get(), cs);
      EXPECT_TRUE(derived.ok()) << derived.error().ToString();
      if (derived.ok()) *locks = derived.value();
    }
    EXPECT_TRUE(Exec(conn_->db(), "ROLLBACK").ok());
    return cs;
  }

  Result<> ApplyAndCommit(const std::string& cs) {
    EXPECT_TRUE(Exec(conn_->db(), "BEGIN").ok());
    Result<> r = ApplyChangeset(conn_.get(), cs);
    EXPECT_TRUE(Exec(conn_->db(), r.ok() ? "COMMIT" : "ROLLBACK").ok());
    return r;
  }

  const TableInfo& Info(const std::string& table) {
    StatusOr<const TableInfo*> info = schema_.Get(conn_->db(), table);
    EXPECT_TRUE(info.ok()) << info.status().ToString();
    return **info;
  }

  static bool HasLock(const std::vector<LockRequest>& locks, const std::string& key,
                      LockMode mode) {
    return std::find(locks.begin(), locks.end(), LockRequest{key, mode}) != locks.end();
  }

  testing::TempDir dir_;
  std::string path_;
  SchemaCache schema_;
  std::unique_ptr<Connection> conn_;
};

TEST_F(ChangesetTest, CaptureThenApplyReproducesTheChanges) {
  Sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');");
  std::string cs = Capture(
      "UPDATE t SET v = 'z' WHERE id = 1; DELETE FROM t WHERE id = 2; "
      "INSERT INTO t VALUES (3, 'c');");
  EXPECT_EQ(3, CountChanges(cs));
  // The capture was rolled back: nothing changed yet.
  EXPECT_EQ(2, Int("SELECT count(*) FROM t"));
  ASSERT_TRUE(ApplyAndCommit(cs).ok());
  EXPECT_EQ(1, Int("SELECT count(*) FROM t WHERE id = 1 AND v = 'z'"));
  EXPECT_EQ(0, Int("SELECT count(*) FROM t WHERE id = 2"));
  EXPECT_EQ(1, Int("SELECT count(*) FROM t WHERE id = 3"));
}

TEST_F(ChangesetTest, ApplyReportsAChangedRowAsConflict) {
  Sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 10);");
  std::string cs = Capture("UPDATE t SET v = v + 1 WHERE id = 1");
  Sql("UPDATE t SET v = 99 WHERE id = 1");
  Result<> r = ApplyAndCommit(cs);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kConflict, r.error().code);
  EXPECT_EQ(99, Int("SELECT v FROM t"));
}

TEST_F(ChangesetTest, ApplyReportsAnExistingPrimaryKeyAsConflict) {
  Sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT);");
  std::string cs = Capture("INSERT INTO t VALUES (1, 10)");
  Sql("INSERT INTO t VALUES (1, 20)");
  Result<> r = ApplyAndCommit(cs);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kConflict, r.error().code);
}

TEST_F(ChangesetTest, ApplyReportsUniqueAndForeignKeyViolations) {
  Sql("CREATE TABLE u(id INTEGER PRIMARY KEY, email TEXT UNIQUE);"
      "CREATE TABLE p(id INTEGER PRIMARY KEY);"
      "CREATE TABLE c(id INTEGER PRIMARY KEY, pid INT REFERENCES p(id));"
      "INSERT INTO p VALUES (1);");
  std::string unique = Capture("INSERT INTO u VALUES (1, 'a@x')");
  Sql("INSERT INTO u VALUES (2, 'a@x')");
  Result<> r = ApplyAndCommit(unique);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kConstraintViolation, r.error().code);

  std::string child = Capture("INSERT INTO c VALUES (1, 1)");
  Sql("DELETE FROM p WHERE id = 1");
  r = ApplyAndCommit(child);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kConstraintViolation, r.error().code);
  EXPECT_EQ(0, Int("SELECT count(*) FROM c"));
}

TEST_F(ChangesetTest, ApplyRunsWithTriggersOff) {
  // The trigger's effect is in the changeset already; firing it again would double it.
  Sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT);"
      "CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT);"
      "CREATE TRIGGER t_audit AFTER UPDATE ON t BEGIN "
      "  INSERT INTO audit(what) VALUES ('update ' || new.id); END;"
      "INSERT INTO t VALUES (1, 0);");
  std::string cs = Capture("UPDATE t SET v = 1 WHERE id = 1");
  EXPECT_EQ(2, CountChanges(cs));
  ASSERT_TRUE(ApplyAndCommit(cs).ok());
  EXPECT_EQ(1, Int("SELECT count(*) FROM audit"));
  // And triggers work again for ordinary statements afterwards.
  Sql("UPDATE t SET v = 2 WHERE id = 1");
  EXPECT_EQ(2, Int("SELECT count(*) FROM audit"));
}

TEST_F(ChangesetTest, CascadeRepeatedAtApplyIsHarmless) {
  Sql("CREATE TABLE p(id INTEGER PRIMARY KEY);"
      "CREATE TABLE c(id INTEGER PRIMARY KEY, pid INT REFERENCES p(id) ON DELETE CASCADE);"
      "CREATE TABLE n(id INTEGER PRIMARY KEY, pid INT REFERENCES p(id) ON DELETE SET NULL);"
      "INSERT INTO p VALUES (1), (2); INSERT INTO c VALUES (10, 1), (11, 1), (12, 2);"
      "INSERT INTO n VALUES (20, 1);");
  std::string cs = Capture("DELETE FROM p WHERE id = 1");
  EXPECT_EQ(4, CountChanges(cs));  // the parent, two cascaded deletes, one SET NULL
  ASSERT_TRUE(ApplyAndCommit(cs).ok());
  EXPECT_EQ(1, Int("SELECT count(*) FROM c"));
  EXPECT_EQ(1, Int("SELECT count(*) FROM n WHERE pid IS NULL"));
}

TEST_F(ChangesetTest, CombineGivesTheNetChange) {
  Sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 0);");
  std::string first = Capture("INSERT INTO t VALUES (2, 5); UPDATE t SET v = 1 WHERE id = 1;");
  ASSERT_TRUE(Exec(conn_->db(), "BEGIN").ok());
  ASSERT_TRUE(ApplyChangeset(conn_.get(), first).ok());
  sqlite3_session* session = nullptr;
  ASSERT_EQ(SQLITE_OK, sqlite3session_create(conn_->db(), "main", &session));
  ASSERT_EQ(SQLITE_OK, sqlite3session_attach(session, nullptr));
  ASSERT_TRUE(
      Exec(conn_->db(), "DELETE FROM t WHERE id = 2; UPDATE t SET v = 2 WHERE id = 1").ok());
  int n = 0;
  void* p = nullptr;
  ASSERT_EQ(SQLITE_OK, sqlite3session_changeset(session, &n, &p));
  std::string second(static_cast<char*>(p), static_cast<size_t>(n));
  sqlite3_free(p);
  sqlite3session_delete(session);
  ASSERT_TRUE(Exec(conn_->db(), "ROLLBACK").ok());

  StatusOr<std::string> net = CombineChangesets(first, second);
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  EXPECT_EQ(1, CountChanges(*net));  // the insert and delete of 2 cancel out
  ASSERT_TRUE(ApplyAndCommit(*net).ok());
  EXPECT_EQ(2, Int("SELECT v FROM t WHERE id = 1"));
  EXPECT_EQ(1, Int("SELECT count(*) FROM t"));
}

TEST_F(ChangesetTest, TablesWithoutPrimaryKeyAreInvisibleToSessions) {
  // Why the authorizer refuses such writes: the changeset silently drops them.
  Sql("CREATE TABLE nopk(v INT)");
  EXPECT_EQ(0, CountChanges(Capture("INSERT INTO nopk VALUES (1)")));
}

TEST_F(ChangesetTest, DerivedLocksCoverTheRowsWritten) {
  Sql("CREATE TABLE t(id INTEGER PRIMARY KEY, a INT, b INT); INSERT INTO t VALUES (1, 0, 0), "
      "(2, 0, 0);");
  std::vector<LockRequest> locks;
  Capture(
      "UPDATE t SET a = 1 WHERE id = 1; DELETE FROM t WHERE id = 2; INSERT INTO t VALUES "
      "(3, 0, 0);",
      &locks);
  const TableInfo& t = Info("t");
  ASSERT_EQ(3u, locks.size());
  EXPECT_TRUE(HasLock(locks, RowLockKey(t, {int64_t{1}}), LockMode::kExclusive));
  EXPECT_TRUE(HasLock(locks, RowLockKey(t, {int64_t{2}}), LockMode::kExclusive));
  EXPECT_TRUE(HasLock(locks, RowLockKey(t, {int64_t{3}}), LockMode::kExclusive));
}

TEST_F(ChangesetTest, DifferentColumnsOfOneRowGiveTheSameRowLock) {
  // Changesets conflict per column; the row lock is what makes conflicts per row.
  Sql("CREATE TABLE t(id INTEGER PRIMARY KEY, a INT, b INT); INSERT INTO t VALUES (1, 0, 0);");
  std::vector<LockRequest> la, lb;
  Capture("UPDATE t SET a = 1 WHERE id = 1", &la);
  Capture("UPDATE t SET b = 1 WHERE id = 1", &lb);
  EXPECT_EQ(la, lb);
}

TEST_F(ChangesetTest, DerivedLocksCoverOldAndNewUniqueValues) {
  Sql("CREATE TABLE u(id INTEGER PRIMARY KEY, email TEXT COLLATE NOCASE UNIQUE, n INT, "
      "x INT, y INT, UNIQUE(x, y));"
      "INSERT INTO u VALUES (1, 'a@x', 0, 1, 1);");
  const TableInfo& u = Info("u");
  ASSERT_EQ(2u, u.unique_indexes.size());
  const KeyIndex* email = nullptr;
  const KeyIndex* xy = nullptr;
  for (const KeyIndex& k : u.unique_indexes) (k.columns.size() == 1 ? email : xy) = &k;
  ASSERT_NE(nullptr, email);
  ASSERT_NE(nullptr, xy);

  std::vector<LockRequest> locks;
  Capture("UPDATE u SET email = 'B@x' WHERE id = 1", &locks);
  EXPECT_TRUE(HasLock(locks, IndexLockKey(u, *email, {std::string("a@x")}), LockMode::kExclusive));
  EXPECT_TRUE(HasLock(locks, IndexLockKey(u, *email, {std::string("b@X")}), LockMode::kExclusive));

  // A composite key where only one column changes: the other comes from the row itself.
  Capture("UPDATE u SET y = 2 WHERE id = 1", &locks);
  EXPECT_TRUE(HasLock(locks, IndexLockKey(u, *xy, {int64_t{1}, int64_t{1}}), LockMode::kExclusive));
  EXPECT_TRUE(HasLock(locks, IndexLockKey(u, *xy, {int64_t{1}, int64_t{2}}), LockMode::kExclusive));

  // Columns outside every unique index add only the row lock.
  Capture("UPDATE u SET n = 5 WHERE id = 1", &locks);
  EXPECT_EQ(1u, locks.size());

  // NULL is never unique: no key lock for it.
  Capture("INSERT INTO u VALUES (2, NULL, 0, NULL, 3)", &locks);
  EXPECT_EQ(1u, locks.size());
}

TEST_F(ChangesetTest, DerivedLocksShareLockTheReferencedParent) {
  Sql("CREATE TABLE p(id INTEGER PRIMARY KEY, code TEXT UNIQUE);"
      "CREATE TABLE c(id INTEGER PRIMARY KEY, pcode TEXT REFERENCES p(code), v INT);"
      "INSERT INTO p VALUES (7, 'seven'); INSERT INTO c VALUES (1, 'seven', 0);");
  const TableInfo& p = Info("p");
  std::vector<LockRequest> locks;
  Capture("INSERT INTO c VALUES (2, 'seven', 0)", &locks);
  EXPECT_TRUE(HasLock(locks, RowLockKey(p, {int64_t{7}}), LockMode::kShared));
  // Even an update that leaves the reference alone: the parent must not go away under it.
  Capture("UPDATE c SET v = 1 WHERE id = 1", &locks);
  EXPECT_TRUE(HasLock(locks, RowLockKey(p, {int64_t{7}}), LockMode::kShared));
  // A delete of a child depends on nothing.
  Capture("DELETE FROM c WHERE id = 1", &locks);
  EXPECT_EQ(1u, locks.size());
  // Deleting the parent locks its row (and its unique code) exclusively.
  Sql("DELETE FROM c");
  Capture("DELETE FROM p WHERE id = 7", &locks);
  EXPECT_TRUE(HasLock(locks, RowLockKey(p, {int64_t{7}}), LockMode::kExclusive));
}

TEST_F(ChangesetTest, SchemaReadsPrimaryKeysUniqueIndexesAndForeignKeys) {
  Sql("CREATE TABLE w(x TEXT, y INT, z, PRIMARY KEY (y, x COLLATE NOCASE)) WITHOUT ROWID;"
      "CREATE TABLE e(id INTEGER PRIMARY KEY, c TEXT);"
      "CREATE UNIQUE INDEX e_lower ON e(lower(c));"
      "CREATE TABLE ch(id INTEGER PRIMARY KEY, wx, wy, FOREIGN KEY (wy, wx) REFERENCES w(y, x));"
      "CREATE TABLE nopk(a INT);");
  const TableInfo& w = Info("w");
  ASSERT_TRUE(w.has_primary_key);
  EXPECT_EQ((std::vector<int>{1, 0}), w.primary_key.columns);
  EXPECT_EQ((std::vector<KeyCollation>{KeyCollation::kBinary, KeyCollation::kNoCase}),
            w.primary_key.collations);
  const TableInfo& e = Info("e");
  ASSERT_EQ(1u, e.unique_indexes.size());
  EXPECT_TRUE(e.unique_indexes[0].whole);  // an expression: whole-index lock
  const TableInfo& ch = Info("ch");
  ASSERT_EQ(1u, ch.foreign_keys.size());
  EXPECT_EQ("w", ch.foreign_keys[0].parent_table);
  EXPECT_EQ((std::vector<int>{2, 1}), ch.foreign_keys[0].child_columns);
  EXPECT_FALSE(Info("nopk").has_primary_key);
  EXPECT_TRUE(schema_.Get(conn_->db(), "missing").status().IsNotFound());
}

}  // namespace
}  // namespace tx::participant
