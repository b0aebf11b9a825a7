# Compiles include/sinkkv/sinkkv.h on its own as C89, C99 and C11 and as
# C++98 and C++17 with one compiler driver (gcc or clang; C++ through -x c++),
# warnings as errors. Run as: cmake -DCOMPILER=... -DINCLUDE_DIR=...
# -DWORK_DIR=... -P header_check.cmake
file(MAKE_DIRECTORY "${WORK_DIR}")
file(WRITE "${WORK_DIR}/only_the_header.c" "#include <sinkkv/sinkkv.h>\nint sinkkv_header_check(void) { return SINKKV_OK; }\n")
set(failures 0)
foreach(mode IN ITEMS "c;c89" "c;c99" "c;c11" "c++;c++98" "c++;c++17")
  list(GET mode 0 language)
  list(GET mode 1 standard)
  execute_process(
    COMMAND "${COMPILER}" -x ${language} -std=${standard} -fsyntax-only -Wall -Wextra -Wpedantic -Werror
            -I "${INCLUDE_DIR}" "${WORK_DIR}/only_the_header.c"
    RESULT_VARIABLE result ERROR_VARIABLE errors OUTPUT_VARIABLE output)
  if(result EQUAL 0)
    message(STATUS "ok      sinkkv.h as ${standard}")
  else()
    message(STATUS "FAILED  sinkkv.h as ${standard}\n${output}${errors}")
    math(EXPR failures "${failures} + 1")
  endif()
endforeach()
if(failures GREATER 0)
  message(FATAL_ERROR "sinkkv.h does not compile on its own in ${failures} modes with ${COMPILER}")
endif()
