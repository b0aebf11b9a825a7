# Compiles tests/codegen/kernel_instances.cpp to assembly and fails unless
# every CpuKernel phase function (score_block, value_block) of every
# instruction-set variant named in VARIANTS (each compiled into the one
# unit, whatever FLAGS say) exists and still contains a prefetch instruction. Compilers may delete prefetches they consider dead
# (GCC 12 once removed all of the value phase's, unnoticed: up to 3x slower
# on caches read from DRAM); results stay correct, so only the code shows it.
#
#   cmake -DCOMPILER=... -DFLAGS="-O3;-march=haswell" -DVARIANTS="avx512_bf16;avx512;avx2;sse2"
#         -DINCLUDE_DIR=... -DEIGEN_DIR=... -DSOURCE=.../kernel_instances.cpp -DWORK_DIR=... -P prefetch_check.cmake
file(MAKE_DIRECTORY "${WORK_DIR}")
set(assembly "${WORK_DIR}/kernel_instances.s")
execute_process(
  COMMAND "${COMPILER}" -std=c++17 ${FLAGS} -DNDEBUG -I "${INCLUDE_DIR}" -isystem "${EIGEN_DIR}" -S "${SOURCE}"
          -o "${assembly}"
  RESULT_VARIABLE status ERROR_VARIABLE errors)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "compiling ${SOURCE} with ${COMPILER} ${FLAGS} failed:\n${errors}")
endif()

# Function labels and prefetch instructions only, in order.
file(STRINGS "${assembly}" lines REGEX "^(_Z[A-Za-z0-9_.]+):|^[ \t]+prefetch[a-z0-9]*[ \t]")
set(current "")
set(functions "")
foreach(line IN LISTS lines)
  if(line MATCHES "^(_Z[A-Za-z0-9_.]+):")
    set(current "${CMAKE_MATCH_1}")
    if(current MATCHES "(score|value)_block")
      list(APPEND functions "${current}")
      set(count_${current} 0)
    endif()
  elseif(current MATCHES "(score|value)_block" AND line MATCHES "^[ \t]+prefetch")
    math(EXPR count_${current} "${count_${current}} + 1")
  endif()
endforeach()

list(LENGTH functions checked)
if(checked EQUAL 0)
  message(FATAL_ERROR "no score_block/value_block functions in ${assembly}: did the kernel's structure change?")
endif()
# Each variant's namespace appears in its functions' mangled names as
# <length><name>, e.g. 4avx2.
foreach(variant IN LISTS VARIANTS)
  string(LENGTH "${variant}" length)
  foreach(phase IN ITEMS score_block value_block)
    set(found OFF)
    foreach(function IN LISTS functions)
      if(function MATCHES "${length}${variant}[0-9].*${phase}")
        set(found ON)
      endif()
    endforeach()
    if(NOT found)
      message(FATAL_ERROR "${COMPILER} ${FLAGS}: no ${phase} function of variant ${variant} in ${assembly}")
    endif()
  endforeach()
endforeach()

set(missing "")
foreach(function IN LISTS functions)
  if(count_${function} EQUAL 0)
    string(APPEND missing "\n  ${function}")
  endif()
endforeach()
if(missing)
  message(FATAL_ERROR "${COMPILER} ${FLAGS}: no prefetch instruction left in:${missing}\n(see ${assembly})")
endif()
message(STATUS "${checked} kernel phase functions of variants ${VARIANTS}, each with its prefetches "
               "(${COMPILER} ${FLAGS})")
