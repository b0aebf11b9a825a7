# Runs PROGRAM (with ARGS, one space-separated string) under EMULATOR with `-cpu CPU`
# (both optional) and environment ENV (a list of NAME=VALUE), failing if it
# fails. Prints "SKIPPED: ..." and succeeds when the emulator is missing, so
# CTest reports the test as skipped (SKIP_REGULAR_EXPRESSION) rather than
# passed or failed.
#
#   cmake -DEMULATOR=qemu-x86_64 -DCPU=Westmere -DPROGRAM=... -DARGS=... -DENV=... -P run_emulated.cmake
set(command "")
if(EMULATOR)
  find_program(emulator_path NAMES ${EMULATOR})
  if(NOT emulator_path)
    message("SKIPPED: ${EMULATOR} is not installed (Debian: apt-get install qemu-user)")
    return()
  endif()
  list(APPEND command "${emulator_path}")
  if(CPU)
    list(APPEND command -cpu "${CPU}")
  endif()
endif()
separate_arguments(args UNIX_COMMAND "${ARGS}")
list(APPEND command "${PROGRAM}" ${args})
execute_process(COMMAND ${CMAKE_COMMAND} -E env ${ENV} ${command} RESULT_VARIABLE status OUTPUT_VARIABLE output
                ERROR_VARIABLE errors)
# The emulator warns about host features it does not model; only the program's output matters.
string(REGEX REPLACE "[^\n]*TCG doesn't support requested feature[^\n]*\n" "" errors "${errors}")
message("${output}${errors}")
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} under ${EMULATOR} -cpu ${CPU} failed: ${status}")
endif()
