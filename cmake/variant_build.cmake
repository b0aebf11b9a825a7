# cmake -P driver of a test variant's nested build (cmake/sinkkv_variants.cmake).
#   SOURCE_DIR        the sinkkv source tree
#   VARIANT_DIR       this variant's folder; the project is built in VARIANT_DIR/build
#   GENERATOR, JOBS   as for the outer tree
#   CACHE_ARGS        -DNAME=value arguments, '|'-separated
#   TARGETS           targets to build, '|'-separated
#   TOOLCHAIN         optional CMake toolchain file
#   GTEST_SOURCE_DIR  optional: build and install GoogleTest from here first
#                     (with TOOLCHAIN), into VARIANT_DIR/googletest-install
cmake_minimum_required(VERSION 3.20)

string(REPLACE "|" ";" cache_args "${CACHE_ARGS}")
string(REPLACE "|" ";" targets "${TARGETS}")

function(run step)
  string(TIMESTAMP start "%s")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result COMMAND_ECHO STDOUT)
  string(TIMESTAMP end "%s")
  math(EXPR seconds "${end} - ${start}")
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "sinkkv variant: ${step} failed (${result}) after ${seconds} s")
  endif()
  message(STATUS "sinkkv variant: ${step}: ${seconds} s")
endfunction()

set(toolchain_args "")
if(TOOLCHAIN)
  set(toolchain_args -DCMAKE_TOOLCHAIN_FILE=${TOOLCHAIN})
endif()

if(GTEST_SOURCE_DIR)
  set(prefix ${VARIANT_DIR}/googletest-install)
  file(GLOB_RECURSE gtest_config ${prefix}/GTestConfig.cmake)
  if(NOT gtest_config)
    run("GoogleTest configure" ${CMAKE_COMMAND} -S ${GTEST_SOURCE_DIR} -B ${VARIANT_DIR}/googletest-build -G ${GENERATOR}
        ${toolchain_args} -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON
        -DCMAKE_INSTALL_PREFIX=${prefix} -DCMAKE_INSTALL_LIBDIR=lib)
    run("GoogleTest build" ${CMAKE_COMMAND} --build ${VARIANT_DIR}/googletest-build -j ${JOBS})
    run("GoogleTest install" ${CMAKE_COMMAND} --install ${VARIANT_DIR}/googletest-build)
  endif()
  list(APPEND cache_args -DGTest_DIR=${prefix}/lib/cmake/GTest)
endif()

run("configure" ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${VARIANT_DIR}/build -G ${GENERATOR} ${toolchain_args} ${cache_args})
run("build" ${CMAKE_COMMAND} --build ${VARIANT_DIR}/build -j ${JOBS} --target ${targets})
