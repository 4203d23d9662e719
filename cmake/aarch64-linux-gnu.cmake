# Cross toolchain for 64-bit Arm Linux from Debian's packages (.ci/arm64.sh):
#   apt-get install g++-aarch64-linux-gnu qemu-user
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake ...
# Programs run under qemu-user (CMAKE_CROSSCOMPILING_EMULATOR; no binfmt registration needed).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(LAZYMM_CROSS_TRIPLET aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${LAZYMM_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${LAZYMM_CROSS_TRIPLET}-g++)
set(CMAKE_FIND_ROOT_PATH /usr/${LAZYMM_CROSS_TRIPLET})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY) # never the host's x86-64 GoogleTest: pass GTest_DIR
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/${LAZYMM_CROSS_TRIPLET})
