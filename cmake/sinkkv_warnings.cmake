# Flags for the project's own targets only (tests, benchmarks, examples); the
# sinkkv::sinkkv interface target carries none.
set(SINKKV_SANITIZE "" CACHE STRING "Sanitizers for our own targets, e.g. address,undefined or thread")

function(sinkkv_project_target target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Werror)
  if(SINKKV_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
  if(SINKKV_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${SINKKV_SANITIZE} -fno-omit-frame-pointer
                                             -fno-sanitize-recover=all)
    target_link_options(${target} PRIVATE -fsanitize=${SINKKV_SANITIZE})
  endif()
endfunction()
