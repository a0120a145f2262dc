# Every dependency comes from a Debian package and is found by CMake. The error messages name
# the package to install.
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBUV REQUIRED IMPORTED_TARGET libuv>=1.44)   # libuv1-dev
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)     # libpcre2-dev (grep_search regexes)
find_package(CURL 7.80 REQUIRED)                                 # libcurl4-openssl-dev
find_package(OpenSSL 3 REQUIRED)                                 # libssl-dev
find_package(RapidJSON REQUIRED)                                 # rapidjson-dev
find_package(Llhttp 8 REQUIRED)                                  # node-llhttp
find_package(Threads REQUIRED)

# RapidJSON's config only sets variables; wrap them in a target.
if(NOT TARGET terminals_rapidjson)
  add_library(terminals_rapidjson INTERFACE)
  target_include_directories(terminals_rapidjson SYSTEM INTERFACE "$<BUILD_INTERFACE:${RapidJSON_INCLUDE_DIRS}>")
  target_compile_definitions(terminals_rapidjson INTERFACE RAPIDJSON_HAS_STDSTRING=1)
endif()
