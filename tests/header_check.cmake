# Compiles every header under include/sinkkv on its own (one translation
# unit each) with one compiler and one language standard, warnings as
# errors. Run as: cmake -DCOMPILER=... -DSTANDARD=17 -DINCLUDE_DIR=...
#                       -DEIGEN_DIR=... -DWORK_DIR=... -P header_check.cmake
file(GLOB_RECURSE headers RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/sinkkv/*.hpp")
list(SORT headers)
file(MAKE_DIRECTORY "${WORK_DIR}")
set(failures 0)
foreach(header IN LISTS headers)
  string(MAKE_C_IDENTIFIER "${header}" stem)
  set(source "${WORK_DIR}/${stem}.cpp")
  file(WRITE "${source}" "#include <${header}>\n")
  execute_process(
    COMMAND "${COMPILER}" -std=c++${STANDARD} -fsyntax-only -Wall -Wextra -Wpedantic -Werror
            -I "${INCLUDE_DIR}" -isystem "${EIGEN_DIR}" "${source}"
    RESULT_VARIABLE result ERROR_VARIABLE errors OUTPUT_VARIABLE output)
  if(result EQUAL 0)
    message(STATUS "ok      ${header}")
  else()
    message(STATUS "FAILED  ${header}\n${output}${errors}")
    math(EXPR failures "${failures} + 1")
  endif()
endforeach()
list(LENGTH headers count)
if(failures GREATER 0)
  message(FATAL_ERROR "${failures} of ${count} headers do not compile on their own with ${COMPILER} C++${STANDARD}")
endif()
message(STATUS "${count} headers compile on their own with ${COMPILER} C++${STANDARD}")
