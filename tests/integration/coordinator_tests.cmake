# The coordinator's real-process tests: three txcoord replicas and txpart agents over Thrift on
# loopback, real SQLite files, real fsync. Included from tests/integration/CMakeLists.txt.

find_package(SQLite3 REQUIRED)

tx_add_test(NAME coordinator_basic_test
  SOURCES coordinator_basic_test.cc
  LIBS tx_test_coordinator_client tx_test_support tx_rpc tx_thrift SQLite::SQLite3
  LABELS integration
  TIMEOUT 300)
add_dependencies(coordinator_basic_test txcoord txpart)

tx_add_test(NAME coordinator_crash_test
  SOURCES coordinator_crash_test.cc
  LIBS tx_test_coordinator_client tx_test_support tx_rpc tx_thrift SQLite::SQLite3
  LABELS integration
  TIMEOUT 300)
add_dependencies(coordinator_crash_test txcoord txpart)
