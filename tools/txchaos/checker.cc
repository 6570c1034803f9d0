#include "tools/txchaos/checker.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sqlite3.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <set>

namespace tx::chaos {
namespace {

// Violations listed in a check's detail; the count is always given.
constexpr size_t kMaxListedViolations = 10;

struct Violations {
  size_t count = 0;
  std::vector<std::string> listed;
  void Add(std::string what) {
    if (listed.size() < kMaxListedViolations) listed.push_back(std::move(what));
    ++count;
  }
  CheckResult Result(std::string name, std::string ok_detail) const {
    CheckResult r;
    r.name = std::move(name);
    r.ok = count == 0;
    r.detail = r.ok ? std::move(ok_detail)
                    : fmt::format("{} violation(s): {}{}", count, fmt::join(listed, "; "),
                                  count > listed.size() ? "; ..." : "");
    return r;
  }
};

// _txpart_prepared.state as docs/participant.md (section 7) documents it: the low bits are
// 1 PREPARED or 2 PRECOMMITTED; 16 marks a transaction in a 3PC termination round.
constexpr int kStoredStateMask = 0x0f;
constexpr int kStoredPreCommitted = 2;
// _txpart_prepared.protocol: 1 2PC, 2 3PC.
constexpr int kStoredThreePhase = 2;

using Db = std::unique_ptr<sqlite3, int (*)(sqlite3*)>;

Status Query(sqlite3* db, const std::string& path, const char* sql,
             const std::function<void(sqlite3_stmt*)>& row) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK) {
    return Status::Corruption(fmt::format("{}: {}: {}", path, sql, sqlite3_errmsg(db)));
  }
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) row(stmt);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) {
    return Status::IOError(fmt::format("{}: {}: {}", path, sql, sqlite3_errmsg(db)));
  }
  return Status::OK();
}

std::string Text(sqlite3_stmt* stmt, int column) {
  const unsigned char* t = sqlite3_column_text(stmt, column);
  return t == nullptr ? "" : reinterpret_cast<const char*>(t);
}

}  // namespace

StatusOr<ParticipantData> ReadParticipant(const std::string& name, const std::string& db_path) {
  sqlite3* raw = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string message = raw ? sqlite3_errmsg(raw) : "out of memory";
    sqlite3_close(raw);
    return Status::IOError(fmt::format("cannot open {}: {}", db_path, message));
  }
  Db db(raw, sqlite3_close);
  sqlite3_busy_timeout(raw, 5000);
  ParticipantData d;
  d.name = name;
  TX_RETURN_IF_ERROR(Query(raw, db_path, "SELECT id, balance FROM accounts", [&](sqlite3_stmt* s) {
    d.balances[sqlite3_column_int64(s, 0)] = sqlite3_column_int64(s, 1);
  }));
  TX_RETURN_IF_ERROR(Query(raw, db_path, "SELECT id, txid FROM ledger", [&](sqlite3_stmt* s) {
    d.ledger[Text(s, 0)] = sqlite3_column_int64(s, 1);
  }));
  TX_RETURN_IF_ERROR(Query(
      raw, db_path, "SELECT txid, outcome FROM _txpart_outcomes",
      [&](sqlite3_stmt* s) { d.outcomes[sqlite3_column_int64(s, 0)] = sqlite3_column_int(s, 1); }));
  TX_RETURN_IF_ERROR(
      Query(raw, db_path, "SELECT txid, state, protocol FROM _txpart_prepared ORDER BY txid",
            [&](sqlite3_stmt* s) {
              const int64_t txid = sqlite3_column_int64(s, 0);
              d.prepared.push_back(txid);
              if ((sqlite3_column_int(s, 1) & kStoredStateMask) == kStoredPreCommitted) {
                d.precommitted.push_back(txid);
              }
              if (sqlite3_column_int(s, 2) == kStoredThreePhase) {
                d.prepared_three_phase.push_back(txid);
              }
            }));
  return d;
}

std::vector<CheckResult> CheckBank(const std::vector<ParticipantData>& data, const BankSpec& spec) {
  int64_t total = 0;
  size_t accounts = 0;
  Violations negative;
  for (const ParticipantData& p : data) {
    for (const auto& [id, balance] : p.balances) {
      total += balance;
      ++accounts;
      if (balance < 0) negative.Add(fmt::format("{} account {} holds {}", p.name, id, balance));
    }
  }
  const int64_t expected =
      static_cast<int64_t>(data.size()) * spec.accounts_per_participant * spec.initial_balance;
  const size_t expected_accounts = data.size() * static_cast<size_t>(spec.accounts_per_participant);
  std::vector<CheckResult> out;
  CheckResult t;
  t.name = "bank.total";
  t.ok = total == expected && accounts == expected_accounts;
  t.detail = t.ok ? fmt::format("{} over {} accounts, as at the start", total, accounts)
                  : fmt::format(
                        "the accounts hold {} over {} accounts; {} over {} expected "
                        "(money created or destroyed)",
                        total, accounts, expected, expected_accounts);
  out.push_back(t);
  if (spec.forbid_negative) {
    out.push_back(negative.Result("bank.no_negative_balance", "no balance below zero"));
  }
  return out;
}

std::vector<CheckResult> CheckLedger(const std::vector<ParticipantData>& data,
                                     const std::vector<OpRecord>& ops) {
  Violations atomic, committed_present, aborted_absent, stray;
  std::set<std::string> known_keys;
  size_t n_committed = 0, n_aborted = 0, n_unknown = 0, n_unknown_visible = 0;
  for (const OpRecord& op : ops) {
    if (op.key.empty()) continue;
    known_keys.insert(op.key);
    std::set<std::string> written(op.written.begin(), op.written.end());
    std::set<std::string> present;
    for (const ParticipantData& p : data) {
      auto it = p.ledger.find(op.key);
      if (it == p.ledger.end()) continue;
      present.insert(p.name);
      if (written.count(p.name) == 0) {
        stray.Add(fmt::format("row {} at {}, where operation {} (txid {}) did not write", op.key,
                              p.name, op.id, op.txid));
      }
      if (op.txid != 0 && it->second != op.txid) {
        stray.Add(fmt::format("row {} at {} names txid {}, the operation had {}", op.key, p.name,
                              it->second, op.txid));
      }
    }
    const std::string where =
        fmt::format("op {} txid {} key {} (written at {}; visible at [{}])", op.id, op.txid, op.key,
                    fmt::join(op.written, ","), fmt::join(present, ","));
    switch (op.result) {
      case OpResult::kCommitted:
        ++n_committed;
        if (present != written) committed_present.Add("told COMMITTED, " + where);
        break;
      case OpResult::kAborted:
      case OpResult::kAbandoned:
      case OpResult::kNoTxn:
        ++n_aborted;
        if (!present.empty()) {
          aborted_absent.Add(fmt::format("told {}, {}", OpResultName(op.result), where));
        }
        break;
      case OpResult::kUnknown:
        ++n_unknown;
        if (!present.empty()) ++n_unknown_visible;
        break;
    }
    if (!present.empty() && present != written) atomic.Add("partly visible: " + where);
  }
  for (const ParticipantData& p : data) {
    for (const auto& [key, txid] : p.ledger) {
      if (known_keys.count(key) == 0) {
        stray.Add(fmt::format("row {} (txid {}) at {} comes from no operation in the history", key,
                              txid, p.name));
      }
    }
  }
  std::vector<CheckResult> out;
  out.push_back(atomic.Result(
      "ledger.atomic_visibility",
      fmt::format("{} ledger transactions, each visible at all its participants or at none",
                  known_keys.size())));
  out.push_back(committed_present.Result(
      "ledger.committed_present",
      fmt::format("all {} told COMMITTED are present everywhere they wrote", n_committed)));
  out.push_back(aborted_absent.Result(
      "ledger.aborted_absent",
      fmt::format("none of {} told ABORTED (or never committed) is visible", n_aborted)));
  out.push_back(stray.Result(
      "ledger.no_stray_rows",
      fmt::format("no row without an operation; {} with an unknown outcome, {} of them committed",
                  n_unknown, n_unknown_visible)));
  return out;
}

std::vector<CheckResult> CheckOutcomes(const std::vector<ParticipantData>& data,
                                       const std::vector<OpRecord>& ops) {
  Violations split, client;
  std::map<int64_t, std::map<std::string, int>> by_txid;  // txid -> participant -> outcome
  for (const ParticipantData& p : data) {
    for (const auto& [txid, outcome] : p.outcomes) by_txid[txid][p.name] = outcome;
  }
  for (const auto& [txid, at] : by_txid) {
    std::set<int> outcomes;
    for (const auto& [name, outcome] : at) outcomes.insert(outcome);
    if (outcomes.size() > 1) {
      std::vector<std::string> parts;
      for (const auto& [name, outcome] : at) {
        parts.push_back(fmt::format("{}={}", name, outcome == 1 ? "committed" : "aborted"));
      }
      split.Add(fmt::format("txid {}: {}", txid, fmt::join(parts, " ")));
    }
  }
  size_t checked = 0;
  for (const OpRecord& op : ops) {
    if (op.txid == 0 || op.written.empty()) continue;
    auto it = by_txid.find(op.txid);
    auto outcome_at = [&](const std::string& name) {
      if (it == by_txid.end()) return 0;
      auto o = it->second.find(name);
      return o == it->second.end() ? 0 : o->second;
    };
    ++checked;
    if (op.result == OpResult::kCommitted) {
      for (const std::string& p : op.written) {
        if (outcome_at(p) != 1) {
          client.Add(fmt::format("txid {} ({} op {}) was told COMMITTED but {} records {}", op.txid,
                                 op.workload, op.id, p,
                                 outcome_at(p) == 0 ? "no outcome" : "ABORTED"));
        }
      }
    } else if (op.result != OpResult::kUnknown) {
      for (const std::string& p : op.written) {
        if (outcome_at(p) == 1) {
          client.Add(fmt::format("txid {} ({} op {}) was told {} but {} committed it", op.txid,
                                 op.workload, op.id, OpResultName(op.result), p));
        }
      }
    }
  }
  std::vector<CheckResult> out;
  out.push_back(split.Result(
      "outcomes.no_split",
      fmt::format("{} txids recorded at participants, none committed at one and aborted at "
                  "another",
                  by_txid.size())));
  out.push_back(client.Result(
      "outcomes.client_agreement",
      fmt::format("{} client answers agree with the participants' records", checked)));
  return out;
}

CheckResult CheckNothingPrepared(const std::vector<ParticipantData>& data) {
  Violations v;
  for (const ParticipantData& p : data) {
    if (!p.prepared.empty()) {
      v.Add(fmt::format("{} still holds prepared txids [{}]", p.name, fmt::join(p.prepared, ",")));
    }
  }
  return v.Result("resolved.nothing_prepared_in_files",
                  "no participant holds a prepared transaction");
}

CheckResult CheckThreePhaseFinishWithoutCoordinators(
    const std::vector<CoordinatorOutage>& outages) {
  Violations v;
  size_t checked = 0, precommitted = 0;
  for (const CoordinatorOutage& o : outages) {
    std::map<int64_t, std::vector<std::string>> held_by;  // 3PC txid -> where prepared
    std::set<int64_t> was_precommitted;
    for (const ParticipantData& p : o.at_down) {
      for (int64_t txid : p.prepared_three_phase) held_by[txid].push_back(p.name);
      was_precommitted.insert(p.precommitted.begin(), p.precommitted.end());
    }
    for (const auto& [txid, holders] : held_by) {
      ++checked;
      const bool must_commit = was_precommitted.count(txid) != 0;
      if (must_commit) ++precommitted;
      const std::string what = fmt::format(
          "3PC txid {} ({} at {} when the coordinators went down at {} ms)", txid,
          must_commit ? "PRECOMMITTED" : "PREPARED", fmt::join(holders, ","), o.down_ms);
      std::set<int> outcomes;
      for (const ParticipantData& p : o.before_restart) {
        if (std::find(p.prepared.begin(), p.prepared.end(), txid) != p.prepared.end()) {
          v.Add(fmt::format("{} still prepared at {} {} ms later", what, p.name,
                            o.restart_ms - o.down_ms));
          continue;
        }
        if (std::find(holders.begin(), holders.end(), p.name) == holders.end()) continue;
        auto it = p.outcomes.find(txid);
        if (it == p.outcomes.end()) {
          v.Add(fmt::format("{} has no outcome at {} {} ms later", what, p.name,
                            o.restart_ms - o.down_ms));
          continue;
        }
        outcomes.insert(it->second);
        if (must_commit && it->second != 1) {
          v.Add(fmt::format("{} recorded ABORTED at {}", what, p.name));
        }
      }
      if (outcomes.size() > 1)
        v.Add(fmt::format("{} committed at one and aborted at another", what));
    }
  }
  return v.Result("threepc.finished_without_coordinators",
                  fmt::format("{} outage(s) of every coordinator; {} 3PC transaction(s) in doubt "
                              "at their start ({} of them PRECOMMITTED somewhere), each finished "
                              "by the participants before a coordinator came back",
                              outages.size(), checked, precommitted));
}

CheckResult CheckNoGrowth(const std::map<std::string, std::vector<ResourceSample>>& by_node,
                          const GrowthBounds& bounds) {
  constexpr double kMiB = 1 << 20;
  std::vector<std::string> grew, figures;
  int checked = 0;
  for (const auto& [node, samples] : by_node) {
    uint64_t early_rss = 0, early_disk = 0, late_rss = 0, late_disk = 0;
    bool early = false, late = false;
    for (const ResourceSample& s : samples) {
      if (s.t_ms >= bounds.early_from_ms && s.t_ms < bounds.early_to_ms) {
        early = true;
        early_rss = std::max(early_rss, s.rss_bytes);
        early_disk = std::max(early_disk, s.disk_bytes);
      } else if (s.t_ms >= bounds.late_from_ms) {
        late = true;
        late_rss = std::max(late_rss, s.rss_bytes);
        late_disk = std::max(late_disk, s.disk_bytes);
      }
    }
    if (!early || !late) continue;
    ++checked;
    figures.push_back(fmt::format("{} rss {:.0f}->{:.0f} MiB disk {:.1f}->{:.1f} MiB", node,
                                  early_rss / kMiB, late_rss / kMiB, early_disk / kMiB,
                                  late_disk / kMiB));
    if (late_rss > early_rss + early_rss / 2 + bounds.slack_rss_bytes) {
      grew.push_back(fmt::format("{} memory grew from {:.0f} MiB to {:.0f} MiB", node,
                                 early_rss / kMiB, late_rss / kMiB));
    }
    if (late_disk > early_disk + early_disk / 2 + bounds.slack_disk_bytes) {
      grew.push_back(fmt::format("{} disk grew from {:.1f} MiB to {:.1f} MiB", node,
                                 early_disk / kMiB, late_disk / kMiB));
    }
  }
  if (!grew.empty()) {
    return {"resources.no_growth", false, fmt::format("{}", fmt::join(grew, "; "))};
  }
  return {"resources.no_growth", checked > 0,
          checked == 0 ? std::string("no process sampled in both windows")
                       : fmt::format("peaks from [{:.0f}s, {:.0f}s) to [{:.0f}s, end): {}",
                                     bounds.early_from_ms / 1000.0, bounds.early_to_ms / 1000.0,
                                     bounds.late_from_ms / 1000.0, fmt::join(figures, ", "))};
}

}  // namespace tx::chaos
