# libtxclient's real-process tests and the install test. Included from
# tests/integration/CMakeLists.txt.

find_package(SQLite3 REQUIRED)

# examples/bank and the library itself against three txcoord and two txpart, with the leader
# killed by SIGKILL mid-run; the SQLite files are the judge.
tx_add_test(NAME client_failover_test
  SOURCES client_failover_test.cc
  LIBS tx_client tx_test_support SQLite::SQLite3
  LABELS integration
  TIMEOUT 300)
add_dependencies(client_failover_test txcoord txpart bank)

# cmake --install into a temporary prefix, then examples/ configured and built as a separate
# project against it (find_package(txclient)). Compiles one small program.
set(TX_INSTALL_TEST_FLAGS "")
if(TX_SANITIZE)
  # The installed library is instrumented, so its consumer must link the sanitizer runtimes.
  set(TX_INSTALL_TEST_FLAGS "-fsanitize=address,undefined")
endif()
add_test(NAME client_install_test
  COMMAND ${CMAKE_COMMAND}
    -DBUILD_DIR=${CMAKE_BINARY_DIR}
    -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
    -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/client_install_test
    "-DEXTRA_FLAGS=${TX_INSTALL_TEST_FLAGS}"
    -P ${CMAKE_CURRENT_SOURCE_DIR}/client_install_test.cmake)
set_tests_properties(client_install_test PROPERTIES LABELS "install" TIMEOUT 300)
