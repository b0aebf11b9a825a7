# Warnings (as errors) and optional -march=native for the project's own
# targets only; the sinkkv::sinkkv interface target carries no flags.
function(sinkkv_project_target target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Werror)
  if(SINKKV_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
endfunction()
