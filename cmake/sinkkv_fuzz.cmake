# Fuzz targets with clang's libFuzzer (docs/testing.md).
#
# A fuzz target is one source file defining
#   extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
# plus a committed seed corpus, tests/fuzz/corpus/<name>/, and the crash
# reproducers found so far, tests/fuzz/regressions/<name>/. Adding one is
# one line in tests/fuzz/CMakeLists.txt:
#   sinkkv_add_fuzzer(<name> <source> [LIBRARIES <target>...] [MAX_LEN <bytes>])
# It gets
# - `fuzz_<name>_replay`: the target with a plain main() (tests/fuzz/replay_main.cpp),
#   built by this tree's compiler; the test `fuzz.<name>.replay` (label unit)
#   runs every seed and every reproducer through it;
# - the test `fuzz.<name>` (labels fuzz, ci): the libFuzzer binary, built with
#   -fsanitize=fuzzer,address,undefined, fuzzes for SINKKV_FUZZ_SECONDS from
#   the seeds and reproducers (replaying them first). New inputs go to
#   <build>/tests/fuzz/work/<name>/corpus, crashes to .../artifacts.
# libFuzzer needs clang: when this tree's compiler is not clang, the libFuzzer
# binaries come from a nested clang build (cmake/sinkkv_variants.cmake).
include_guard(GLOBAL)

option(SINKKV_FUZZ "Build the libFuzzer binaries in this tree (needs clang with libFuzzer)" OFF)
set(SINKKV_FUZZ_SECONDS 60 CACHE STRING "Seconds each fuzz target runs in its fuzz test")
set(SINKKV_FUZZ_CLANGXX "" CACHE FILEPATH "clang++ for the nested libFuzzer build (found when empty)")

set(SINKKV_FUZZ_REPLAY_MAIN ${CMAKE_CURRENT_LIST_DIR}/../tests/fuzz/replay_main.cpp)
set(SINKKV_FUZZ_FLAGS -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)

if(SINKKV_FUZZ)
  include(CheckCXXSourceCompiles)
  set(CMAKE_REQUIRED_FLAGS -fsanitize=fuzzer)
  set(CMAKE_REQUIRED_LINK_OPTIONS -fsanitize=fuzzer)
  check_cxx_source_compiles("#include <cstddef>
    #include <cstdint>
    extern \"C\" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return 0; }" SINKKV_HAVE_LIBFUZZER)
  unset(CMAKE_REQUIRED_FLAGS)
  unset(CMAKE_REQUIRED_LINK_OPTIONS)
  if(NOT SINKKV_HAVE_LIBFUZZER)
    message(FATAL_ERROR "sinkkv: SINKKV_FUZZ needs clang with libFuzzer (Debian: clang libfuzzer-14-dev); "
                        "this compiler is ${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER}")
  endif()
endif()

function(sinkkv_add_fuzzer name source)
  cmake_parse_arguments(ARG "" "MAX_LEN" "LIBRARIES" ${ARGN})
  set(corpus ${CMAKE_CURRENT_SOURCE_DIR}/corpus/${name})
  set(regressions ${CMAKE_CURRENT_SOURCE_DIR}/regressions/${name})
  if(NOT IS_DIRECTORY ${corpus} OR NOT IS_DIRECTORY ${regressions})
    message(FATAL_ERROR "sinkkv: fuzz target ${name} needs a committed seed corpus in ${corpus} "
                        "and a folder for its crash reproducers, ${regressions}")
  endif()

  add_executable(fuzz_${name}_replay ${source} ${SINKKV_FUZZ_REPLAY_MAIN})
  target_link_libraries(fuzz_${name}_replay PRIVATE sinkkv::sinkkv ${ARG_LIBRARIES})
  sinkkv_project_target(fuzz_${name}_replay)
  add_test(NAME fuzz.${name}.replay COMMAND fuzz_${name}_replay ${corpus} ${regressions})
  set_tests_properties(fuzz.${name}.replay PROPERTIES LABELS unit)

  if(SINKKV_FUZZ)
    add_executable(fuzz_${name} ${source})
    target_link_libraries(fuzz_${name} PRIVATE sinkkv::sinkkv ${ARG_LIBRARIES})
    sinkkv_project_target(fuzz_${name})
    target_compile_options(fuzz_${name} PRIVATE ${SINKKV_FUZZ_FLAGS})
    target_link_options(fuzz_${name} PRIVATE ${SINKKV_FUZZ_FLAGS})
  endif()

  set_property(DIRECTORY APPEND PROPERTY SINKKV_FUZZERS ${name})
  set_property(DIRECTORY PROPERTY SINKKV_FUZZER_MAX_LEN_${name} "${ARG_MAX_LEN}")
endfunction()

# Whether `compiler` links -fsanitize=fuzzer,address,undefined. Only a
# success is cached: installing libFuzzer later and reconfiguring enables fuzzing.
function(_sinkkv_libfuzzer_works out compiler)
  if(SINKKV_LIBFUZZER_WORKS_WITH STREQUAL compiler)
    set(${out} TRUE PARENT_SCOPE)
    return()
  endif()
  set(dir ${CMAKE_CURRENT_BINARY_DIR}/libfuzzer_check)
  file(WRITE ${dir}/check.cpp "#include <cstddef>\n#include <cstdint>\n"
             "extern \"C\" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return 0; }\n")
  execute_process(COMMAND ${compiler} -fsanitize=fuzzer,address,undefined ${dir}/check.cpp -o ${dir}/check
                  RESULT_VARIABLE result OUTPUT_QUIET ERROR_QUIET)
  if(result EQUAL 0)
    set(SINKKV_LIBFUZZER_WORKS_WITH ${compiler} CACHE INTERNAL "clang++ that links libFuzzer")
    set(${out} TRUE PARENT_SCOPE)
  else()
    set(${out} FALSE PARENT_SCOPE)
  endif()
endfunction()

# After the last sinkkv_add_fuzzer of the directory: one bounded fuzzing test
# per target, from this tree (SINKKV_FUZZ) or a nested clang build.
function(sinkkv_add_fuzz_runs)
  get_property(names DIRECTORY PROPERTY SINKKV_FUZZERS)
  file(RELATIVE_PATH relative ${PROJECT_BINARY_DIR} ${CMAKE_CURRENT_BINARY_DIR})
  set(fixture "")
  if(SINKKV_FUZZ)
    set(binary_dir ${CMAKE_CURRENT_BINARY_DIR})
  elseif(SINKKV_TEST_VARIANTS)
    set(clangxx ${SINKKV_FUZZ_CLANGXX})
    if(NOT clangxx)
      if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
        set(clangxx ${CMAKE_CXX_COMPILER})
      else()
        find_program(SINKKV_FUZZ_FOUND_CLANGXX NAMES clang++ clang++-14)
        set(clangxx ${SINKKV_FUZZ_FOUND_CLANGXX})
      endif()
    endif()
    set(works FALSE)
    if(clangxx)
      _sinkkv_libfuzzer_works(works ${clangxx})
    endif()
    if(NOT works)
      sinkkv_variant_unavailable(fuzz LABEL fuzz
        REASON "fuzzing needs clang++ with libFuzzer (Debian: clang libfuzzer-14-dev); found '${clangxx}'")
      return()
    endif()
    list(TRANSFORM names PREPEND fuzz_ OUTPUT_VARIABLE targets)
    sinkkv_add_variant_build(fuzz LABEL fuzz TARGETS ${targets}
                             CACHE CMAKE_CXX_COMPILER=${clangxx} CMAKE_BUILD_TYPE=RelWithDebInfo SINKKV_FUZZ=ON)
    set(fixture sinkkv_variant_fuzz)
    set(binary_dir ${PROJECT_BINARY_DIR}/variants/fuzz/build/${relative})
  else()
    return()
  endif()

  foreach(name IN LISTS names)
    get_property(max_len DIRECTORY PROPERTY SINKKV_FUZZER_MAX_LEN_${name})
    add_test(NAME fuzz.${name}
             COMMAND ${CMAKE_COMMAND} -DFUZZER=${binary_dir}/fuzz_${name} -DSECONDS=${SINKKV_FUZZ_SECONDS}
                     -DMAX_LEN=${max_len} -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/work/${name}
                     -DCORPUS=${CMAKE_CURRENT_SOURCE_DIR}/corpus/${name}
                     -DREGRESSIONS=${CMAKE_CURRENT_SOURCE_DIR}/regressions/${name}
                     -P ${PROJECT_SOURCE_DIR}/cmake/run_fuzzer.cmake)
    math(EXPR timeout "${SINKKV_FUZZ_SECONDS} + 300")
    set_tests_properties(fuzz.${name} PROPERTIES LABELS "fuzz;ci" TIMEOUT ${timeout})
    if(fixture)
      set_tests_properties(fuzz.${name} PROPERTIES FIXTURES_REQUIRED ${fixture})
    endif()
  endforeach()
endfunction()
