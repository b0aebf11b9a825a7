# The cache and snapshot fuzz targets in a tree without the fuzz
# infrastructure (cmake/sinkkv_fuzz.cmake): their committed seeds and crash
# reproducers replayed as unit tests. With the infrastructure, the targets
# are one line each in tests/fuzz/CMakeLists.txt, and this folder goes:
#   sinkkv_add_fuzzer(cache cache_fuzzer.cpp MAX_LEN 4096)
#   sinkkv_add_fuzzer(snapshot snapshot_fuzzer.cpp MAX_LEN 16384)
# Fuzzing by hand meanwhile (clang with libFuzzer):
#   clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude -isystem /usr/include/eigen3 \
#     tests/fuzz/cache_fuzzer.cpp -o fuzz_cache && ./fuzz_cache -max_len=4096 work_corpus tests/fuzz/corpus/cache
foreach(name IN ITEMS cache snapshot)
  add_executable(fuzz_${name}_replay ${CMAKE_CURRENT_LIST_DIR}/../${name}_fuzzer.cpp
                                     ${CMAKE_CURRENT_LIST_DIR}/replay_main.cpp)
  target_link_libraries(fuzz_${name}_replay PRIVATE sinkkv::sinkkv)
  sinkkv_project_target(fuzz_${name}_replay)
  add_test(NAME fuzz.${name}.replay
           COMMAND fuzz_${name}_replay ${CMAKE_CURRENT_LIST_DIR}/../corpus/${name}
                   ${CMAKE_CURRENT_LIST_DIR}/../regressions/${name})
  set_tests_properties(fuzz.${name}.replay PROPERTIES LABELS unit)
endforeach()
