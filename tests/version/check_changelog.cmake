# version.debian_changelog: the upstream part of debian/changelog's top entry must be the project
# version. cmake -DCHANGELOG=... -DEXPECT=... -P check_changelog.cmake
file(STRINGS ${CHANGELOG} top LIMIT_COUNT 1)
if(NOT top MATCHES "^lazymm \\(([0-9.]+)(-[^)]*)?\\) ")
  message(FATAL_ERROR "${CHANGELOG}: cannot read the version from its first line: ${top}")
endif()
if(NOT CMAKE_MATCH_1 STREQUAL EXPECT)
  message(FATAL_ERROR "${CHANGELOG} is at ${CMAKE_MATCH_1}, CMakeLists.txt project() at ${EXPECT}: "
                      "add a changelog entry (dch -v ${EXPECT}-1) or fix the project version")
endif()
message(STATUS "debian/changelog: ${CMAKE_MATCH_1}${CMAKE_MATCH_2}; project(): ${EXPECT}")
