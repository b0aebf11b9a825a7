# The C interface (include/sinkkv/sinkkv.h, src/c_api.cpp): library
# sinkkv_c, alias sinkkv::sinkkv_c, exported with sinkkv::sinkkv. Static or
# shared as BUILD_SHARED_LIBS says; a shared build exports only the sinkkv_
# functions. A static sinkkv_c carries C++ code: CMake links its users with
# the C++ compiler (their project must enable CXX).

# The header's version macros must say what project() says.
file(STRINGS ${PROJECT_SOURCE_DIR}/include/sinkkv/sinkkv.h sinkkv_c_version_lines
     REGEX "^#define SINKKV_VERSION_(MAJOR|MINOR|PATCH) ")
foreach(part IN ITEMS MAJOR MINOR PATCH)
  string(REGEX MATCH "SINKKV_VERSION_${part} ([0-9]+)" _ "${sinkkv_c_version_lines}")
  if(NOT CMAKE_MATCH_1 STREQUAL "${PROJECT_VERSION_${part}}")
    message(FATAL_ERROR "sinkkv: include/sinkkv/sinkkv.h says SINKKV_VERSION_${part} '${CMAKE_MATCH_1}', "
                        "project() says '${PROJECT_VERSION_${part}}'")
  endif()
endforeach()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/include/sinkkv/sinkkv.h)

# Our C tests and example (enable_language must run in the top directory).
if(SINKKV_BUILD_TESTS OR SINKKV_BUILD_EXAMPLES)
  enable_language(C)
endif()

find_package(Threads REQUIRED)  # the thread pool behind sinkkv_thread_pool

add_library(sinkkv_c src/c_api.cpp)
add_library(sinkkv::sinkkv_c ALIAS sinkkv_c)
target_include_directories(sinkkv_c PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
                                           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_link_libraries(sinkkv_c PRIVATE sinkkv::sinkkv Threads::Threads)
target_compile_features(sinkkv_c PRIVATE cxx_std_17)
target_compile_definitions(sinkkv_c PRIVATE SINKKV_C_BUILDING)
if(BUILD_SHARED_LIBS)
  target_compile_definitions(sinkkv_c PUBLIC SINKKV_C_SHARED)
  if(CMAKE_SYSTEM_NAME MATCHES "Linux|BSD" AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    # Hidden visibility still exports the standard library's template
    # instantiations; the version script keeps only sinkkv_*.
    target_link_options(sinkkv_c PRIVATE "LINKER:--version-script=${PROJECT_SOURCE_DIR}/src/sinkkv_c.map")
    set_property(TARGET sinkkv_c APPEND PROPERTY LINK_DEPENDS ${PROJECT_SOURCE_DIR}/src/sinkkv_c.map)
  endif()
endif()
# 0.x: every minor version may change the ABI (as the package's SameMinorVersion).
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(sinkkv_c_soversion ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
else()
  set(sinkkv_c_soversion ${PROJECT_VERSION_MAJOR})
endif()
set_target_properties(sinkkv_c PROPERTIES CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON
                                          VERSION ${PROJECT_VERSION} SOVERSION ${sinkkv_c_soversion}
                                          EXPORT_NAME sinkkv_c)
# Our warnings (as errors) and sanitizers in developer builds only, never in
# a packager's or a vendoring project's.
if(SINKKV_IS_TOP_LEVEL AND SINKKV_BUILD_TESTS)
  sinkkv_project_target(sinkkv_c)
endif()
