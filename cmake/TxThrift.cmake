# Generates C++ from Thrift IDL at build time. Generated code is never committed.
#
# tx_thrift_library(NAME target
#                   IDL a.thrift [b.thrift ...]          # relative to the calling directory
#                   SERVICES_<idl-stem> Svc1 Svc2 ...    # services each IDL defines
#                   CONSTANTS stem...)                   # IDLs that define constants
# Produces a static library `target` whose include directory holds the generated headers.
find_package(PkgConfig REQUIRED)
pkg_check_modules(THRIFT REQUIRED IMPORTED_TARGET thrift)
find_package(Boost REQUIRED)  # Thrift's headers include Boost headers.
find_program(THRIFT_COMPILER thrift REQUIRED)

function(tx_thrift_library)
  # Two passes: the SERVICES_<stem> keywords are known only once the IDL names are, and every
  # one of them must be declared, or the values of one would run on into the next.
  cmake_parse_arguments(PRE "" "NAME" "IDL;CONSTANTS" ${ARGN})
  set(service_keywords)
  foreach(idl ${PRE_IDL})
    if(idl MATCHES "\\.thrift$")
      get_filename_component(stem ${idl} NAME_WE)
      list(APPEND service_keywords SERVICES_${stem})
    endif()
  endforeach()
  cmake_parse_arguments(ARG "" "NAME" "IDL;CONSTANTS;${service_keywords}" ${ARGN})
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/gen-cpp)
  file(MAKE_DIRECTORY ${out_dir})
  set(all_sources)
  set(all_idl_paths)
  foreach(idl ${ARG_IDL})
    list(APPEND all_idl_paths ${CMAKE_CURRENT_SOURCE_DIR}/${idl})
  endforeach()
  foreach(idl ${ARG_IDL})
    get_filename_component(stem ${idl} NAME_WE)
    set(outputs ${out_dir}/${stem}_types.cpp ${out_dir}/${stem}_types.h)
    if(stem IN_LIST ARG_CONSTANTS)
      list(APPEND outputs ${out_dir}/${stem}_constants.cpp ${out_dir}/${stem}_constants.h)
    endif()
    foreach(svc ${ARG_SERVICES_${stem}})
      list(APPEND outputs ${out_dir}/${svc}.cpp ${out_dir}/${svc}.h)
    endforeach()
    add_custom_command(
      OUTPUT ${outputs}
      COMMAND ${THRIFT_COMPILER} --gen cpp:moveable_types,no_skeleton -I ${CMAKE_CURRENT_SOURCE_DIR}
              -out ${out_dir} ${CMAKE_CURRENT_SOURCE_DIR}/${idl}
      # An IDL may include others, so any IDL change regenerates every file.
      DEPENDS ${all_idl_paths}
      COMMENT "Generating C++ from ${idl}"
      VERBATIM)
    foreach(f ${outputs})
      if(f MATCHES "\\.cpp$")
        list(APPEND all_sources ${f})
      endif()
    endforeach()
  endforeach()
  add_library(${ARG_NAME} STATIC ${all_sources})
  target_include_directories(${ARG_NAME} SYSTEM PUBLIC ${out_dir})
  target_link_libraries(${ARG_NAME} PUBLIC PkgConfig::THRIFT Boost::headers)
endfunction()
