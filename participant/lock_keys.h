// Names of the locks that protect rows and unique keys.
//
// Byte layout (all names lower-cased, since SQL identifiers are case-insensitive):
//   row:          'R' table '\0' value...          (the primary key's values, in key order)
//   unique key:   'U' table '\0' index '\0' value...
//   whole index:  ... '*' in place of the values   (for keys we cannot normalize)
// Each value is a tag byte and a payload:
//   0x01 + 8-byte big-endian int64; a REAL with an integral value in int64 range is written as
//        the integer, because SQLite compares 1 and 1.0 as equal in an index
//   0x02 + 8-byte big-endian IEEE-754 bits of a non-integral REAL
//   0x03 + 4-byte big-endian length + bytes of TEXT, after applying the column's collation
//        (NOCASE: ASCII lower-cased; RTRIM: trailing spaces removed)
//   0x04 + 4-byte big-endian length + bytes of a BLOB
// NULL never appears: a key with a NULL column is not unique (SQLite allows many) and a
// foreign key with a NULL column references nothing, so no lock is taken for them.
//
// Two values SQLite considers equal under the index's collation get the same bytes, so two
// transactions that would collide on a row or a unique key collide on its lock.

#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "participant/participant.h"
#include "participant/schema.h"

namespace tx::participant {

// Lock on the row of `table` whose primary key has `pk_values` (in primary_key.columns order).
// Requires table.has_primary_key and no NULL values.
std::string RowLockKey(const TableInfo& table, const std::vector<Value>& pk_values);

// Lock on one value of a unique index (`values` in index.columns order, none NULL), or on the
// whole index when index.whole.
std::string IndexLockKey(const TableInfo& table, const KeyIndex& index,
                         const std::vector<Value>& values);

// "row accounts(7)", "key users.idx_email('a@b')", "index t.ix(*)": for error messages.
std::string DescribeLockKey(std::string_view key);

}  // namespace tx::participant
