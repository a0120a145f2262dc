# Debian's node-llhttp ships llhttp's generated C sources and its header but no library, so we
# compile them here into a private static library. Nothing is copied into our tree.
#   Llhttp_SOURCE_DIR  (default /usr/share/llhttp)         api.c http.c llhttp.c
#   Llhttp_INCLUDE_DIR (default /usr/share/include/llhttp) llhttp.h
# Produces the imported-free target terminals_llhttp (static, PIC, hidden symbols).
find_path(Llhttp_INCLUDE_DIR llhttp.h
  PATHS /usr/share/include/llhttp /usr/include/llhttp /usr/local/include/llhttp
  DOC "Directory containing llhttp.h")
find_path(Llhttp_SOURCE_DIR llhttp.c
  PATHS /usr/share/llhttp /usr/local/share/llhttp
  DOC "Directory containing llhttp's generated C sources")

if(Llhttp_INCLUDE_DIR AND EXISTS "${Llhttp_INCLUDE_DIR}/llhttp.h")
  file(STRINGS "${Llhttp_INCLUDE_DIR}/llhttp.h" _ver REGEX "#define LLHTTP_VERSION_(MAJOR|MINOR|PATCH) ")
  foreach(_l IN LISTS _ver)
    if(_l MATCHES "LLHTTP_VERSION_(MAJOR|MINOR|PATCH) ([0-9]+)")
      set(_llhttp_${CMAKE_MATCH_1} ${CMAKE_MATCH_2})
    endif()
  endforeach()
  set(Llhttp_VERSION "${_llhttp_MAJOR}.${_llhttp_MINOR}.${_llhttp_PATCH}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Llhttp
  REQUIRED_VARS Llhttp_SOURCE_DIR Llhttp_INCLUDE_DIR
  VERSION_VAR Llhttp_VERSION
  REASON_FAILURE_MESSAGE "install Debian's node-llhttp package (apt-get install node-llhttp)")

if(Llhttp_FOUND AND NOT TARGET terminals_llhttp)
  add_library(terminals_llhttp STATIC
    "${Llhttp_SOURCE_DIR}/api.c" "${Llhttp_SOURCE_DIR}/http.c" "${Llhttp_SOURCE_DIR}/llhttp.c")
  target_include_directories(terminals_llhttp SYSTEM PUBLIC "$<BUILD_INTERFACE:${Llhttp_INCLUDE_DIR}>")
  set_target_properties(terminals_llhttp PROPERTIES
    C_VISIBILITY_PRESET hidden POSITION_INDEPENDENT_CODE ON
    OUTPUT_NAME terminals_llhttp)
  # The generated code is not ours to fix; keep its warnings out of our builds.
  target_compile_options(terminals_llhttp PRIVATE -w)
endif()
