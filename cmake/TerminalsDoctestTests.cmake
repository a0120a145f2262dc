# terminals_discover_tests(TARGET [TIMEOUT s] [LABELS l...] [PROPERTIES p v...])
#
# Registers every doctest TEST_CASE of TARGET as its own CTest entry, labelled by its
# TEST_SUITE, like doctest_discover_tests(... ADD_LABELS 1) but listing the binary once (its
# XML listing carries each case's suite) instead of running it once per test case to ask: with
# 400 cases that took minutes under the sanitizers. Names with commas keep their label, and the
# filter escapes them (doctest splits filters on unescaped commas).
function(terminals_discover_tests target)
  cmake_parse_arguments(ARG "" "TIMEOUT" "LABELS;PROPERTIES" ${ARGN})
  set(ctest_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_tests.cmake")
  add_custom_command(TARGET ${target} POST_BUILD
    BYPRODUCTS "${ctest_file}"
    COMMAND "${CMAKE_COMMAND}"
            -D "TEST_EXECUTABLE=$<TARGET_FILE:${target}>"
            -D "CTEST_FILE=${ctest_file}"
            -D "TEST_TIMEOUT=${ARG_TIMEOUT}"
            -D "TEST_LABELS=${ARG_LABELS}"
            -D "TEST_PROPERTIES=${ARG_PROPERTIES}"
            -D "TEST_WORKING_DIR=${CMAKE_CURRENT_BINARY_DIR}"
            -P "${PROJECT_SOURCE_DIR}/cmake/TerminalsDoctestAddTests.cmake"
    VERBATIM)
  # Read by ctest when present; the first build writes it.
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${ctest_file}")
endfunction()
