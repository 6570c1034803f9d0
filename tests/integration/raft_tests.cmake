# The real-process Raft test: three raft_example_server processes, kill -9 of the leader.
tx_add_test(NAME raft_failover_test
  SOURCES raft_failover_test.cc
  LIBS tx_raft_example_client tx_test_support
  LABELS integration raft
  TIMEOUT 120)
add_dependencies(raft_failover_test raft_example_server)
