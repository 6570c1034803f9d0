# The participant agent's real-process tests: the txpart binary over Thrift on loopback,
# real SQLite files, real fsync. Included from tests/integration/CMakeLists.txt.

tx_add_test(NAME participant_crash_test
  SOURCES participant_crash_test.cc
  LIBS tx_participant_service tx_test_support
  LABELS integration
  TIMEOUT 300)
add_dependencies(participant_crash_test txpart)

tx_add_test(NAME participant_concurrency_test
  SOURCES participant_concurrency_test.cc
  LIBS tx_participant_service tx_test_support
  LABELS integration
  TIMEOUT 300)
add_dependencies(participant_concurrency_test txpart)
