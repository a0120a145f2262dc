# Warning and sanitizer flags, applied through an interface target so that third-party code
# we compile ourselves (llhttp) is not held to our warning level.
add_library(terminals_warnings INTERFACE)
target_compile_options(terminals_warnings INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wpedantic>
  $<$<AND:$<BOOL:${TERMINALS_WERROR}>,$<CXX_COMPILER_ID:GNU,Clang>>:-Werror>
  # GCC 12 reports std::string concatenation as overlapping memcpy at -O3 (GCC bug 105329,
  # fixed in 13); the warning is noise there, so Release builds can keep -Werror.
  $<$<AND:$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>>:-Wno-restrict>)

if(TERMINALS_SANITIZE)
  add_compile_options(-fsanitize=${TERMINALS_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${TERMINALS_SANITIZE})
endif()
