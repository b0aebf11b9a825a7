# Test variants: the project's own test binaries rebuilt in a nested build
# tree with other settings (sanitizers, a cross compiler, no SIMD, clang with
# libFuzzer), each run as a CTest test of this tree.
#
# A variant is one CTest fixture: the setup test `<variant>.build` configures
# ${PROJECT_BINARY_DIR}/variants/<variant>/build from this source tree and
# builds only the targets the variant needs (cmake/variant_build.cmake); each
# test binary then runs whole, as the test `<variant>.<target>`. One process
# per binary: sanitizers and emulators pay their start-up once, not once per
# GoogleTest case. The nested tree stays between runs, so a rerun rebuilds
# only what changed.
#
# Every variant test carries its own label and the label `ci`: the default
# `scripts/test.sh` leaves them out, `.ci/run` includes them (docs/testing.md).

include_guard(GLOBAL)

# Off in the nested trees themselves (no variants of variants) and in cross builds.
if(CMAKE_CROSSCOMPILING)
  set(_sinkkv_variants_default OFF)
else()
  set(_sinkkv_variants_default ON)
endif()
option(SINKKV_TEST_VARIANTS "Register the sanitizer, arm64, no-SIMD and fuzzing test variants"
       ${_sinkkv_variants_default})
cmake_host_system_information(RESULT _sinkkv_cores QUERY NUMBER_OF_LOGICAL_CORES)
set(SINKKV_VARIANT_JOBS ${_sinkkv_cores} CACHE STRING "Parallel jobs of each nested variant build")
set(SINKKV_VARIANT_BUILD_TIMEOUT 1800 CACHE STRING "Seconds a variant's nested configure and build may take")

# sinkkv_variant_unavailable(<variant> LABEL <label> REASON <text>)
# A single test that reports why the variant cannot run here and is counted
# as skipped, not passed.
function(sinkkv_variant_unavailable variant)
  cmake_parse_arguments(ARG "" "LABEL;REASON" "" ${ARGN})
  add_test(NAME ${variant}.unavailable COMMAND ${CMAKE_COMMAND} -E echo "SKIPPED: ${ARG_REASON}")
  set_tests_properties(${variant}.unavailable PROPERTIES LABELS "${ARG_LABEL};ci" SKIP_REGULAR_EXPRESSION "SKIPPED:")
endfunction()

# sinkkv_add_variant_build(<variant> LABEL <label> TARGETS <target>...
#                          [TOOLCHAIN <file>] [GTEST_SOURCE_DIR <dir>] [CACHE <NAME=value>...])
# Registers the setup test `<variant>.build` (fixture `sinkkv_variant_<variant>`).
# TARGETS are target names of this project, built in the nested tree.
# TOOLCHAIN: a CMake toolchain file (cross builds); host variants build with
#   this tree's C++ compiler unless CACHE names another.
# GTEST_SOURCE_DIR: build GoogleTest from these sources with the variant's
#   compiler first (cross builds: Debian's libgtest-dev is for the host).
function(sinkkv_add_variant_build variant)
  cmake_parse_arguments(ARG "" "LABEL;TOOLCHAIN;GTEST_SOURCE_DIR" "TARGETS;CACHE" ${ARGN})
  set(cache_args -DSINKKV_TEST_VARIANTS=OFF -DSINKKV_BUILD_BENCHMARKS=OFF -DSINKKV_BUILD_EXAMPLES=OFF
                 -DSINKKV_BUILD_TESTS=ON)
  if(Eigen3_DIR)
    list(APPEND cache_args -DEigen3_DIR=${Eigen3_DIR})
  endif()
  if(CMAKE_MAKE_PROGRAM)
    list(APPEND cache_args -DCMAKE_MAKE_PROGRAM=${CMAKE_MAKE_PROGRAM})
  endif()
  if(NOT ARG_TOOLCHAIN AND NOT ";${ARG_CACHE};" MATCHES ";CMAKE_CXX_COMPILER=")
    list(APPEND cache_args -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
  endif()
  foreach(entry IN LISTS ARG_CACHE)
    list(APPEND cache_args -D${entry})
  endforeach()
  # The driver receives lists joined with '|' (add_test would split ';').
  string(REPLACE ";" "|" cache_args "${cache_args}")
  string(REPLACE ";" "|" targets "${ARG_TARGETS}")
  set(dir ${PROJECT_BINARY_DIR}/variants/${variant})
  add_test(NAME ${variant}.build
           COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${PROJECT_SOURCE_DIR} -DVARIANT_DIR=${dir}
                   -DGENERATOR=${CMAKE_GENERATOR} -DJOBS=${SINKKV_VARIANT_JOBS} "-DCACHE_ARGS=${cache_args}"
                   "-DTARGETS=${targets}" -DTOOLCHAIN=${ARG_TOOLCHAIN} -DGTEST_SOURCE_DIR=${ARG_GTEST_SOURCE_DIR}
                   -P ${PROJECT_SOURCE_DIR}/cmake/variant_build.cmake)
  # PROCESSORS: the nested build uses all its jobs; `ctest -j` then runs nothing beside it.
  set_tests_properties(${variant}.build PROPERTIES FIXTURES_SETUP sinkkv_variant_${variant} LABELS "${ARG_LABEL};ci"
                                                  PROCESSORS ${SINKKV_VARIANT_JOBS}
                                                  TIMEOUT ${SINKKV_VARIANT_BUILD_TIMEOUT})
endfunction()

# sinkkv_variant_binary(<out-var> <variant> <target>)
# Where the nested build of <variant> puts <target>: the same relative folder
# as in this tree. The target must be defined here (any configuration).
function(sinkkv_variant_binary out variant target)
  if(NOT TARGET ${target})
    message(FATAL_ERROR "sinkkv: variant ${variant}: no target '${target}' in this project")
  endif()
  get_target_property(binary_dir ${target} BINARY_DIR)
  file(RELATIVE_PATH relative ${PROJECT_BINARY_DIR} ${binary_dir})
  set(${out} ${PROJECT_BINARY_DIR}/variants/${variant}/build/${relative}/$<TARGET_FILE_NAME:${target}> PARENT_SCOPE)
endfunction()

# sinkkv_add_variant(<variant> LABEL <label> TESTS <gtest target>...
#                    [EMULATOR <command>...] [ENVIRONMENT <NAME=value>...] [TIMEOUT <s>]
#                    [TOOLCHAIN <file>] [GTEST_SOURCE_DIR <dir>] [CACHE <NAME=value>...])
# The nested build of TESTS (sinkkv_add_variant_build) and one test
# `<variant>.<target>` per binary, run whole (through EMULATOR if given) in
# its own build folder.
function(sinkkv_add_variant variant)
  cmake_parse_arguments(ARG "" "LABEL;TIMEOUT;TOOLCHAIN;GTEST_SOURCE_DIR" "TESTS;EMULATOR;ENVIRONMENT;CACHE" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 900)
  endif()
  list(REMOVE_DUPLICATES ARG_TESTS)
  sinkkv_add_variant_build(${variant} LABEL ${ARG_LABEL} TARGETS ${ARG_TESTS} TOOLCHAIN "${ARG_TOOLCHAIN}"
                           GTEST_SOURCE_DIR "${ARG_GTEST_SOURCE_DIR}" CACHE ${ARG_CACHE})
  foreach(target IN LISTS ARG_TESTS)
    sinkkv_variant_binary(binary ${variant} ${target})
    get_target_property(binary_dir ${target} BINARY_DIR)
    file(RELATIVE_PATH relative ${PROJECT_BINARY_DIR} ${binary_dir})
    # Through `cmake -E env`: the binary exists only once the fixture has built it.
    add_test(NAME ${variant}.${target} COMMAND ${CMAKE_COMMAND} -E env ${ARG_EMULATOR} ${binary}
             WORKING_DIRECTORY ${PROJECT_BINARY_DIR}/variants/${variant}/build/${relative})
    set_tests_properties(${variant}.${target} PROPERTIES FIXTURES_REQUIRED sinkkv_variant_${variant}
                                                        LABELS "${ARG_LABEL};ci" TIMEOUT ${ARG_TIMEOUT})
    if(ARG_ENVIRONMENT)
      set_tests_properties(${variant}.${target} PROPERTIES ENVIRONMENT "${ARG_ENVIRONMENT}")
    endif()
  endforeach()
endfunction()
