# The install test (cmake -P): installs the build into a fresh prefix, checks what was
# installed, then configures and builds examples/ as a project of its own against it, the way
# an application would, and runs the result.
#   -DBUILD_DIR=<build tree> -DSOURCE_DIR=<repository> -DWORK_DIR=<scratch> [-DEXTRA_FLAGS=...]
cmake_minimum_required(VERSION 3.25)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

# What an application gets: the package files, the library, and public headers that include
# nothing but the standard library and each other (no Thrift, no internal headers).
file(GLOB_RECURSE config_files ${prefix}/*/txclientConfig.cmake ${prefix}/*/txclientConfigVersion.cmake)
list(LENGTH config_files n)
if(NOT n EQUAL 2)
  message(FATAL_ERROR "expected txclientConfig.cmake and its version file, found: ${config_files}")
endif()
file(GLOB_RECURSE libs ${prefix}/lib*/libtxclient.so)
if(NOT libs)
  message(FATAL_ERROR "libtxclient.so not installed under ${prefix}")
endif()
file(GLOB headers ${prefix}/include/txclient/*.h)
if(NOT headers)
  message(FATAL_ERROR "no headers in ${prefix}/include/txclient")
endif()
foreach(h ${headers})
  file(STRINGS ${h} includes REGEX "^#include")
  foreach(line ${includes})
    if(NOT line MATCHES "^#include <[a-z_]+>$" AND NOT line MATCHES "^#include \"txclient/[a-z_]+\\.h\"$")
      message(FATAL_ERROR "${h} includes something an application may not have: ${line}")
    endif()
  endforeach()
endforeach()

set(flags "")
if(EXTRA_FLAGS)
  set(flags "-DCMAKE_CXX_FLAGS=${EXTRA_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${EXTRA_FLAGS}")
endif()
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples -B ${WORK_DIR}/build
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release ${flags})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build -j 2)

# The program runs, loading the installed library (not the build tree's).
execute_process(COMMAND ldd ${WORK_DIR}/build/bank OUTPUT_VARIABLE ldd_out)
string(FIND "${ldd_out}" "${prefix}" found)
if(found EQUAL -1)
  message(FATAL_ERROR "bank does not load libtxclient from ${prefix}:\n${ldd_out}")
endif()
execute_process(COMMAND ${WORK_DIR}/build/bank --no-such-flag
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 2 OR NOT err MATCHES "usage: ")
  message(FATAL_ERROR "bank built against the installed package did not run: ${rc}\n${out}\n${err}")
endif()
message(STATUS "installed to ${prefix}; examples built against it and ran")
