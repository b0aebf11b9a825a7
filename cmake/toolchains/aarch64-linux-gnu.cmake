# Cross build for 64-bit Arm Linux with Debian's cross compiler
# (g++-aarch64-linux-gnu); the binaries run on x86 under qemu-user.
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
# GoogleTest must be built for aarch64 too (Debian's libgtest-dev is for the
# host): the `arm64` test variant builds it from /usr/src/googletest.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(SINKKV_CROSS_TRIPLE aarch64-linux-gnu)
set(SINKKV_CROSS_ROOT /usr/${SINKKV_CROSS_TRIPLE})  # Debian's multiarch cross sysroot (libc, libstdc++)
set(CMAKE_C_COMPILER ${SINKKV_CROSS_TRIPLE}-gcc)     # GoogleTest's project enables C
set(CMAKE_CXX_COMPILER ${SINKKV_CROSS_TRIPLE}-g++)

# qemu-aarch64 runs the test binaries (CTest, gtest_discover_tests); -L
# points its dynamic loader at the cross sysroot.
find_program(SINKKV_QEMU_AARCH64 qemu-aarch64)
if(SINKKV_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${SINKKV_QEMU_AARCH64} -L ${SINKKV_CROSS_ROOT})
endif()

set(CMAKE_FIND_ROOT_PATH ${SINKKV_CROSS_ROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# Packages also from the host: Eigen's CMake config (/usr/share/eigen3) is
# architecture-independent. Name compiled packages explicitly (GTest_DIR) so
# the host's x86 builds are not picked up.
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
