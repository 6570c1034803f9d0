// Changesets: capturing a transaction's writes, applying them, and deriving the locks that
// keep them valid.
//
// A changeset (SQLite session extension) lists, per table, the rows a transaction inserted,
// updated or deleted, with old and new values. The agent keeps one cumulative changeset per
// transaction and applies it to the database only at commit.

#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "participant/connection.h"
#include "participant/lock_manager.h"
#include "participant/participant.h"

namespace tx::participant {

// Applies `changeset` to the main database inside the caller's open transaction, with
// triggers off (their effects are already in the changeset) and foreign keys checked at the
// end. A conflict that leaves a row exactly as the changeset wants it (a DELETE whose row is
// gone, an UPDATE whose row already holds the new values: what a foreign-key action such as
// ON DELETE CASCADE does when it runs again during apply) is skipped. Any other conflict
// fails the call and leaves the database as it was before it:
//   kConflict             a row differs from the changeset's old values, is missing, or a
//                         row with the inserted primary key exists
//   kConstraintViolation  UNIQUE, NOT NULL, CHECK or FOREIGN KEY
// With `allow_deferred_fk` a FOREIGN KEY violation at the end is tolerated (the changes are
// kept): a transaction in progress may satisfy a deferred foreign key later.
Result<> ApplyChangeset(Connection* conn, std::string_view changeset,
                        bool allow_deferred_fk = false);

// Merges `next` (recorded after `base` was applied) into `base`, giving the net changeset.
StatusOr<std::string> CombineChangesets(std::string_view base, std::string_view next);

// Number of row changes in a changeset.
int64_t CountChanges(std::string_view changeset);

// The locks a transaction needs so that `changeset` (recorded on `conn` in the still-open
// capture transaction, whose state this reads) stays valid until the transaction ends:
//  - X on each changed row (by primary key);
//  - X on each unique-index value the change removes or adds (so two transactions cannot
//    both claim a UNIQUE value, or one free a value the other takes);
//  - S on the parent row of each foreign-key reference of an inserted or updated row (so the
//    parent cannot be deleted or re-keyed before commit, nor a foreign-key action change
//    this row behind our back: deleting or re-keying the parent needs X on it).
// Sorted by key, one entry per key with the strongest mode.
Result<std::vector<LockRequest>> DeriveLocks(Connection* conn, std::string_view changeset);

// X locks on rows of rowid tables named by (table, rowid), read in `conn`'s open transaction.
// For rows an UPDATE touched without changing them: the changeset leaves them out, but the
// statement wrote them (a blind write of the value a concurrent transaction just committed is
// still a lost update), so first-committer-wins must see them. Rows that no longer exist are
// skipped.
Result<std::vector<LockRequest>> RowLocksByRowid(
    Connection* conn, const std::vector<std::pair<std::string, int64_t>>& rows);

}  // namespace tx::participant
