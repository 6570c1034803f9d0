# 3PC with real processes: every coordinator replica killed past PRECOMMIT, the participants
# finish on their own (termination protocol). Included from tests/integration/CMakeLists.txt.

find_package(SQLite3 REQUIRED)

tx_add_test(NAME three_phase_test
  SOURCES three_phase_test.cc
  LIBS tx_test_coordinator_client tx_test_support tx_rpc tx_thrift SQLite::SQLite3
  LABELS integration
  TIMEOUT 300)
add_dependencies(three_phase_test txcoord txpart)
