#include "participant/lock_keys.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

namespace tx::participant {
namespace {

constexpr char kTagInteger = 0x01;
constexpr char kTagReal = 0x02;
constexpr char kTagText = 0x03;
constexpr char kTagBlob = 0x04;

void PutU64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}
void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}

void PutBytes(std::string* out, char tag, std::string_view bytes) {
  out->push_back(tag);
  PutU32(out, static_cast<uint32_t>(bytes.size()));
  out->append(bytes);
}

void PutValue(std::string* out, const Value& v, KeyCollation coll) {
  switch (v.index()) {
    case 1:
      out->push_back(kTagInteger);
      PutU64(out, static_cast<uint64_t>(std::get<int64_t>(v)));
      return;
    case 2: {
      double d = std::get<double>(v);
      // Integral values in [-2^63, 2^63) compare equal to the integer: encode them as one.
      if (std::isfinite(d) && d == std::floor(d) && d >= -9223372036854775808.0 &&
          d < 9223372036854775808.0) {
        out->push_back(kTagInteger);
        PutU64(out, static_cast<uint64_t>(static_cast<int64_t>(d)));
        return;
      }
      uint64_t bits;
      std::memcpy(&bits, &d, sizeof bits);
      out->push_back(kTagReal);
      PutU64(out, bits);
      return;
    }
    case 3: {
      std::string s = std::get<std::string>(v);
      if (coll == KeyCollation::kNoCase) s = LowerAscii(s);
      if (coll == KeyCollation::kRtrim) {
        while (!s.empty() && s.back() == ' ') s.pop_back();
      }
      PutBytes(out, kTagText, s);
      return;
    }
    case 4:
      PutBytes(out, kTagBlob, std::get<Blob>(v).bytes);
      return;
    default:
      TX_CHECK(false, "NULL in a lock key");
  }
}

uint64_t GetU64(std::string_view s, size_t pos) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(s[pos + i]);
  return v;
}

uint32_t GetU32(std::string_view s, size_t pos) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s[pos + i]);
  return v;
}

}  // namespace

std::string RowLockKey(const TableInfo& table, const std::vector<Value>& pk_values) {
  TX_CHECK(table.has_primary_key, "row lock for table {} without a primary key", table.name);
  TX_CHECK(pk_values.size() == table.primary_key.columns.size(),
           "row lock for {} with {} key values, want {}", table.name, pk_values.size(),
           table.primary_key.columns.size());
  std::string key(1, 'R');
  key += LowerAscii(table.name);
  key.push_back('\0');
  if (table.primary_key.whole) {
    key.push_back('*');
    return key;
  }
  for (size_t i = 0; i < pk_values.size(); ++i) {
    PutValue(&key, pk_values[i], table.primary_key.collations[i]);
  }
  return key;
}

std::string IndexLockKey(const TableInfo& table, const KeyIndex& index,
                         const std::vector<Value>& values) {
  std::string key(1, 'U');
  key += LowerAscii(table.name);
  key.push_back('\0');
  key += LowerAscii(index.name);
  key.push_back('\0');
  if (index.whole) {
    key.push_back('*');
    return key;
  }
  TX_CHECK(values.size() == index.columns.size(), "key of {}.{} with {} values, want {}",
           table.name, index.name, values.size(), index.columns.size());
  for (size_t i = 0; i < values.size(); ++i) PutValue(&key, values[i], index.collations[i]);
  return key;
}

std::string DescribeLockKey(std::string_view key) {
  if (key.empty()) return "<empty lock key>";
  char kind = key[0];
  size_t pos = 1;
  size_t end = key.find('\0', pos);
  if (end == std::string_view::npos) return "<malformed lock key>";
  std::string name(key.substr(pos, end - pos));
  pos = end + 1;
  if (kind == 'U') {
    end = key.find('\0', pos);
    if (end == std::string_view::npos) return "<malformed lock key>";
    name += '.';
    name += key.substr(pos, end - pos);
    pos = end + 1;
  }
  std::string values;
  if (pos < key.size() && key[pos] == '*') {
    values = "*";
  } else {
    while (pos < key.size()) {
      if (!values.empty()) values += ", ";
      char tag = key[pos++];
      if ((tag == kTagInteger || tag == kTagReal) && pos + 8 <= key.size()) {
        uint64_t bits = GetU64(key, pos);
        pos += 8;
        if (tag == kTagInteger) {
          values += fmt::format("{}", static_cast<int64_t>(bits));
        } else {
          double d;
          std::memcpy(&d, &bits, sizeof d);
          values += fmt::format("{}", d);
        }
      } else if ((tag == kTagText || tag == kTagBlob) && pos + 4 <= key.size()) {
        uint32_t n = GetU32(key, pos);
        pos += 4;
        if (pos + n > key.size()) return "<malformed lock key>";
        Value v = tag == kTagText ? Value(std::string(key.substr(pos, n)))
                                  : Value(Blob{std::string(key.substr(pos, n))});
        values += ValueToString(v);
        pos += n;
      } else {
        return "<malformed lock key>";
      }
    }
  }
  return fmt::format("{} {}({})", kind == 'R' ? "row" : "key", name, values);
}

}  // namespace tx::participant
