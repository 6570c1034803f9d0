// Running a client's statements on a connection: parameter binding, result collection with a
// size bound, and the mapping of SQLite failures to typed errors.

#pragma once

#include <vector>

#include "participant/connection.h"
#include "participant/participant.h"

namespace tx::participant {

// Runs one statement on `conn` (inside whatever transaction is open there). `*budget_bytes`
// bounds the result size and is decreased by it; running out fails with kTooLarge.
// Errors: kInvalidSql, kInvalidArgument (parameters), kNoPrimaryKey, kConstraintViolation,
// kTooLarge, kUnavailable (disk full or I/O), kInternal.
Result<ResultSet> RunStatement(Connection* conn, const Statement& statement, size_t* budget_bytes);

// True if every statement only reads (so it may run on a reader connection). Errors as for
// RunStatement's preparation.
Result<bool> AllReadOnly(Connection* conn, const std::vector<Statement>& statements);

}  // namespace tx::participant
