# Target helpers. Every component folder is one library silo_<name>, linked through its alias
# silo::<name>; includes are rooted at the repository ("common/status_macros.h").
#
#   silo_cc_library(NAME n HDRS ... SRCS ... [DEPS ...] [PUBLIC_DEPS ...] [NO_WERROR])
#     DEPS are private; PUBLIC_DEPS only for what the public headers include.
#   silo_cc_binary(NAME n SRCS ... [DEPS ...])            -> build/bin/n
#   silo_cc_test(NAME n SRCS ... [DEPS ...] [LABELS ...])  -> build/bin/n, one ctest per test case
include(GoogleTest)

set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
# CMake 3.25 cannot ask nvcc 13 for C++20, so .cu files are C++17.
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/bin")
set(CMAKE_LIBRARY_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/lib")
set(CMAKE_ARCHIVE_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/lib")

set(SILO_WARNINGS -Wall -Wextra -Wpedantic -Wnon-virtual-dtor -Wimplicit-fallthrough)

# Compile options of our own targets: warnings (as errors unless NO_WERROR) and -march.
function(_silo_target_options target no_werror)
  set(cxx_flags ${SILO_WARNINGS})
  if(NOT no_werror)
    list(APPEND cxx_flags -Werror)
  endif()
  if(SILO_MARCH)
    list(APPEND cxx_flags -march=${SILO_MARCH})
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${cxx_flags}>)
  if(SILO_HAVE_CUDA)
    # nvcc's intermediate host files use GCC line markers, which -Wpedantic rejects.
    set(host_flags ${cxx_flags})
    list(REMOVE_ITEM host_flags -Wpedantic)
    list(JOIN host_flags "," host_flags)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${host_flags}>)
    if(NOT no_werror)
      target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings>)
    endif()
  endif()
endfunction()

function(silo_cc_library)
  cmake_parse_arguments(ARG "NO_WERROR" "NAME" "HDRS;SRCS;DEPS;PUBLIC_DEPS" ${ARGN})
  if(NOT ARG_NAME)
    message(FATAL_ERROR "silo_cc_library: NAME is required")
  endif()
  set(target silo_${ARG_NAME})
  if(ARG_SRCS)
    add_library(${target} STATIC ${ARG_SRCS} ${ARG_HDRS})
    target_include_directories(${target} PUBLIC "${PROJECT_SOURCE_DIR}")
    target_link_libraries(${target} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_DEPS})
    _silo_target_options(${target} "${ARG_NO_WERROR}")
  else()
    add_library(${target} INTERFACE ${ARG_HDRS})
    target_include_directories(${target} INTERFACE "${PROJECT_SOURCE_DIR}")
    target_link_libraries(${target} INTERFACE ${ARG_PUBLIC_DEPS} ${ARG_DEPS})
  endif()
  add_library(silo::${ARG_NAME} ALIAS ${target})
endfunction()

function(silo_cc_binary)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SRCS})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS})
  _silo_target_options(${ARG_NAME} FALSE)
endfunction()

# Tests find fetched models through SILO_MODELS_DIR (the repository's models/ by default).
set(SILO_MODELS_DIR "${PROJECT_SOURCE_DIR}/models" CACHE PATH "Where scripts/fetch-models put the models")

function(silo_cc_test)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS;LABELS" ${ARGN})
  silo_cc_binary(NAME ${ARG_NAME} SRCS ${ARG_SRCS}
                 DEPS ${ARG_DEPS} silo::testing GTest::gtest GTest::gmock GTest::gtest_main)
  set(properties ENVIRONMENT "SILO_MODELS_DIR=${SILO_MODELS_DIR}")
  if(ARG_LABELS)
    # Escaped: PROPERTIES is itself a list, and several labels must stay one value.
    string(REPLACE ";" "\\;" labels "${ARG_LABELS}")
    list(APPEND properties LABELS "${labels}")
  endif()
  gtest_discover_tests(${ARG_NAME} DISCOVERY_MODE PRE_TEST NO_PRETTY_VALUES PROPERTIES ${properties})
endfunction()
