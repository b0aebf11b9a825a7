# Cross-compiles SOURCES (gtest programs, ';'-separated, each optionally
# "path|gtest filter") for AArch64 with
# Debian's aarch64-linux-gnu-g++ and runs each under qemu-aarch64, with
# googletest built from /usr/src/googletest (the arm64 libgtest is not
# installable beside the amd64 one). Prints "SKIPPED: ..." and succeeds when
# a tool is missing (CTest's SKIP_REGULAR_EXPRESSION).
#
#   cmake -DSOURCES=... -DFLAGS=... -DINCLUDE_DIRS=... -DEIGEN_DIR=... -DWORK_DIR=... -P cross_arm64.cmake
find_program(cross_cxx NAMES aarch64-linux-gnu-g++)
find_program(qemu NAMES qemu-aarch64)
set(googletest /usr/src/googletest/googletest)
if(NOT cross_cxx OR NOT qemu OR NOT EXISTS "${googletest}/src/gtest-all.cc")
  message("SKIPPED: needs aarch64-linux-gnu-g++, qemu-aarch64 and /usr/src/googletest "
          "(Debian: apt-get install g++-aarch64-linux-gnu qemu-user googletest)")
  return()
endif()
file(MAKE_DIRECTORY "${WORK_DIR}")

# googletest, once per build folder.
set(gtest_objects "${WORK_DIR}/gtest-all.o" "${WORK_DIR}/gtest_main.o")
if(NOT EXISTS "${WORK_DIR}/gtest_main.o")
  foreach(unit IN ITEMS gtest-all gtest_main)
    execute_process(COMMAND "${cross_cxx}" -std=c++17 -O1 -I "${googletest}" -I "${googletest}/include" -c
                            "${googletest}/src/${unit}.cc" -o "${WORK_DIR}/${unit}.o"
                    RESULT_VARIABLE status ERROR_VARIABLE errors)
    if(NOT status EQUAL 0)
      message(FATAL_ERROR "cross-compiling googletest's ${unit}.cc failed:\n${errors}")
    endif()
  endforeach()
endif()

# The target's libraries (libc.so.6 lives in <prefix>/lib): qemu's -L.
execute_process(COMMAND "${cross_cxx}" -print-file-name=libc.so.6 OUTPUT_VARIABLE libc OUTPUT_STRIP_TRAILING_WHITESPACE)
get_filename_component(target_prefix "${libc}" DIRECTORY)
get_filename_component(target_prefix "${target_prefix}" DIRECTORY)

set(include_flags "")
foreach(dir IN LISTS INCLUDE_DIRS)
  list(APPEND include_flags -I "${dir}")
endforeach()
foreach(entry IN LISTS SOURCES)
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 source)
  set(filter "*")
  list(LENGTH parts parts_count)
  if(parts_count GREATER 1)
    list(GET parts 1 filter)
  endif()
  get_filename_component(name "${source}" NAME_WE)
  set(program "${WORK_DIR}/${name}")
  execute_process(COMMAND "${cross_cxx}" -std=c++17 -O2 -Wall -Wextra -Wpedantic -Werror ${FLAGS} ${include_flags}
                          -isystem "${EIGEN_DIR}" -isystem "${googletest}/include" "${source}" ${gtest_objects}
                          -pthread -o "${program}"
                  RESULT_VARIABLE status ERROR_VARIABLE errors)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "aarch64-linux-gnu-g++ ${FLAGS} ${source} failed:\n${errors}")
  endif()
  execute_process(COMMAND "${qemu}" -L "${target_prefix}" "${program}" --gtest_brief=1 "--gtest_filter=${filter}" RESULT_VARIABLE status OUTPUT_VARIABLE output
                  ERROR_VARIABLE errors)
  message("${output}${errors}")
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "${name} (aarch64 ${FLAGS}) failed under qemu-aarch64: ${status}")
  endif()
endforeach()
