# Run at build time by terminals_discover_tests (TerminalsDoctestTests.cmake): lists the doctest
# binary's cases once, in XML, and writes the CTest file registering each.
execute_process(
  COMMAND "${TEST_EXECUTABLE}" --list-test-cases --reporters=xml --no-version
  OUTPUT_VARIABLE output
  RESULT_VARIABLE result
  WORKING_DIRECTORY "${TEST_WORKING_DIR}")
if(NOT result EQUAL 0)
  message(FATAL_ERROR "listing the test cases of ${TEST_EXECUTABLE} failed (${result}):\n${output}")
endif()

# ";" separates CMake list items, and XML entities end with one: every ";" is a token until the
# name is taken apart.
set(semi "@TERMINALS_SEMICOLON@")
function(xml_unescape var text)
  string(REPLACE "&quot${semi}" "\"" text "${text}")
  string(REPLACE "&apos${semi}" "'" text "${text}")
  string(REPLACE "&lt${semi}" "<" text "${text}")
  string(REPLACE "&gt${semi}" ">" text "${text}")
  string(REPLACE "&amp${semi}" "&" text "${text}")
  string(REPLACE "${semi}" ";" text "${text}")
  set(${var} "${text}" PARENT_SCOPE)
endfunction()

set(script "")
set(count 0)
string(REPLACE ";" "${semi}" output "${output}")
string(REGEX MATCHALL "<TestCase [^\n]*/>" cases "${output}")
foreach(entry IN LISTS cases)
  if(NOT entry MATCHES "name=\"([^\"]*)\"")
    continue()
  endif()
  xml_unescape(name "${CMAKE_MATCH_1}")
  set(suite "")
  if(entry MATCHES "testsuite=\"([^\"]*)\"")
    xml_unescape(suite "${CMAKE_MATCH_1}")
  endif()
  # doctest filters: "," separates patterns and "\" escapes; "*" and "?" are wildcards, which
  # match themselves too, so they need nothing.
  string(REPLACE "\\" "\\\\" filter "${name}")
  string(REPLACE "," "\\," filter "${filter}")
  set(labels ${suite} ${TEST_LABELS})
  list(JOIN labels ";" labels)
  string(APPEND script
    "add_test([==[${name}]==] [==[${TEST_EXECUTABLE}]==] [==[--test-case=${filter}]==])\n"
    "set_tests_properties([==[${name}]==] PROPERTIES WORKING_DIRECTORY [==[${TEST_WORKING_DIR}]==]"
    " TIMEOUT ${TEST_TIMEOUT} LABELS [==[${labels}]==] ${TEST_PROPERTIES})\n")
  math(EXPR count "${count} + 1")
endforeach()
if(count EQUAL 0)
  message(FATAL_ERROR "${TEST_EXECUTABLE} listed no test cases:\n${output}")
endif()
file(WRITE "${CTEST_FILE}" "${script}")
