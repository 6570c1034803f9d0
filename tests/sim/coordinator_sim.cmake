# The coordinator's deterministic simulation (coordinator_sim): real Raft core, state machine,
# batcher and driver; modelled participants and clients. Included from tests/sim/CMakeLists.txt.
add_library(tx_coordinator_sim STATIC coordinator_sim.cc)
tx_target_defaults(tx_coordinator_sim)
target_link_libraries(tx_coordinator_sim PUBLIC tx_coordinator_core tx_raft_core)

add_executable(coordinator_sim coordinator_sim_main.cc)
tx_target_defaults(coordinator_sim)
target_link_libraries(coordinator_sim PRIVATE tx_coordinator_sim tx_sim_runner spdlog::spdlog)

# In ctest: shards of seeds so that ctest -j2 uses both cores (about 10-25 ms per seed in
# Release; sanitizer builds are several times slower). A failing shard prints the seed and the
# violated property; replay it with `coordinator_sim --seed S`.
if(TX_SANITIZE)
  set(coordinator_sim_shards 2)
  set(coordinator_sim_seeds_per_shard 50)
else()
  set(coordinator_sim_shards 4)
  set(coordinator_sim_seeds_per_shard 250)
endif()
math(EXPR coordinator_sim_last_shard "${coordinator_sim_shards} - 1")
foreach(shard RANGE ${coordinator_sim_last_shard})
  math(EXPR first_seed "${shard} * ${coordinator_sim_seeds_per_shard} + 1")
  add_test(NAME coordinator_sim.seeds_${first_seed}
           COMMAND coordinator_sim --seeds ${coordinator_sim_seeds_per_shard}
                   --first-seed ${first_seed})
  set_tests_properties(coordinator_sim.seeds_${first_seed}
                       PROPERTIES TIMEOUT 300 LABELS "coordinator;sim")
endforeach()
