# Installs sinkkv from BUILD_DIR into a scratch prefix, then configures,
# builds and runs tests/package/consumer (a C++ and a C program) twice:
# through find_package and through add_subdirectory. Run with: cmake -DSOURCE_DIR=... -DBUILD_DIR=...
# -DWORK_DIR=... -DGENERATOR=... -P check.cmake
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(NOT result EQUAL 0)
    string(REPLACE ";" " " command "${ARGN}")
    message(FATAL_ERROR "failed (${result}): ${command}\n${output}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
foreach(mode IN ITEMS find_package add_subdirectory)
  set(extra "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix")
  if(mode STREQUAL "add_subdirectory")
    set(extra "-DSINKKV_SOURCE_DIR=${SOURCE_DIR}")
  endif()
  run(${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/package/consumer" -B "${WORK_DIR}/${mode}" -G "${GENERATOR}"
      -DCMAKE_BUILD_TYPE=Release ${extra})
  run(${CMAKE_COMMAND} --build "${WORK_DIR}/${mode}")
  run("${WORK_DIR}/${mode}/consumer")
  run("${WORK_DIR}/${mode}/c_consumer")
  message(STATUS "consumer and c_consumer through ${mode}: built and ran")
endforeach()
