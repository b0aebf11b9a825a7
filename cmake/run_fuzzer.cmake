# cmake -P driver of one bounded libFuzzer run (cmake/sinkkv_fuzz.cmake).
#   FUZZER       the libFuzzer binary
#   SECONDS      fuzzing time (-max_total_time)
#   MAX_LEN      optional -max_len
#   WORK_DIR     new corpus entries go to WORK_DIR/corpus, crashes to WORK_DIR/artifacts
#   CORPUS       the committed seed corpus (read only)
#   REGRESSIONS  the committed crash reproducers (read only)
# libFuzzer first runs every seed and reproducer, then mutates; any crash,
# sanitizer report, leak or input slower than 10 s fails the test.
cmake_minimum_required(VERSION 3.20)

file(MAKE_DIRECTORY ${WORK_DIR}/corpus ${WORK_DIR}/artifacts)
file(GLOB old_artifacts ${WORK_DIR}/artifacts/*)
if(old_artifacts)
  file(REMOVE ${old_artifacts})
endif()

set(options -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
            -artifact_prefix=${WORK_DIR}/artifacts/)
if(MAX_LEN)
  list(APPEND options -max_len=${MAX_LEN})
endif()
# The first folder receives the new inputs; the committed ones stay untouched.
execute_process(COMMAND ${FUZZER} ${options} ${WORK_DIR}/corpus ${CORPUS} ${REGRESSIONS} RESULT_VARIABLE result)

if(NOT result EQUAL 0)
  file(GLOB artifacts ${WORK_DIR}/artifacts/*)
  get_filename_component(name ${REGRESSIONS} NAME)
  string(REPLACE ";" "\n  " artifacts "${artifacts}")
  message(FATAL_ERROR "fuzz target ${name} failed (${result}). Reproducer(s):\n  ${artifacts}\n"
                      "Replay one: ${FUZZER} <file>. Keep it: copy it into ${REGRESSIONS}/ (the replay test "
                      "then runs it) and write the unit test that fails without the fix (docs/testing.md).")
endif()
