# Installation and the CMake / pkg-config packages (included from the top level when
# TERMINALS_INSTALL is on). After `cmake --install`, a consumer uses either
#   find_package(terminals CONFIG REQUIRED)  +  target_link_libraries(app PRIVATE terminals::terminals)
# or
#   pkg-config --cflags --libs terminals
# The build tree is a package too: point terminals_DIR (or CMAKE_PREFIX_PATH) at it.
include(CMakePackageConfigHelpers)

set(TERMINALS_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/terminals"
    CACHE STRING "Where terminalsConfig.cmake is installed, relative to the prefix")
set(TERMINALS_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig"
    CACHE STRING "Where terminals.pc is installed, relative to the prefix")

# libterminals is static and links llhttp privately, so llhttp's objects are needed on the
# consumer's link line: the compiled llhttp library is installed and exported next to it, as
# terminals::llhttp. Its headers stay private.
set_target_properties(terminals_llhttp PROPERTIES EXPORT_NAME llhttp)

install(TARGETS terminals terminals_llhttp
  EXPORT terminalsTargets
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

# The public headers, and version.hpp, which is configured into the build tree.
install(DIRECTORY "${PROJECT_SOURCE_DIR}/libterminals/include/terminals"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
  FILES_MATCHING PATTERN "*.hpp")
install(FILES "${PROJECT_BINARY_DIR}/libterminals/include/terminals/version.hpp"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/terminals")

if(TARGET terminals-cli)
  install(TARGETS terminals-cli terminals-agent RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
endif()

# CMake package: terminalsTargets.cmake (the targets), terminalsConfig.cmake (finds the
# dependencies on the static library's link interface, then loads the targets) and
# terminalsConfigVersion.cmake.
install(EXPORT terminalsTargets
  NAMESPACE terminals::
  FILE terminalsTargets.cmake
  DESTINATION "${TERMINALS_INSTALL_CMAKEDIR}")

configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/terminalsConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/terminalsConfig.cmake"
  INSTALL_DESTINATION "${TERMINALS_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/terminalsConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMajorVersion)
install(FILES
    "${PROJECT_BINARY_DIR}/terminalsConfig.cmake"
    "${PROJECT_BINARY_DIR}/terminalsConfigVersion.cmake"
  DESTINATION "${TERMINALS_INSTALL_CMAKEDIR}")

# Build-tree package: the same config and version files sit in the build directory next to
# this targets file, whose include paths point into the source and build trees. The build-only
# interface targets (warnings, RapidJSON) ride along because the build-tree link interface
# names them.
export(TARGETS terminals terminals_llhttp terminals_rapidjson terminals_warnings
  NAMESPACE terminals::
  FILE "${PROJECT_BINARY_DIR}/terminalsTargets.cmake")

# pkg-config. The prefix is computed from the .pc file's own location, so the file stays right
# when the install prefix is chosen at install time (cmake --install --prefix ...).
foreach(_dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_dir}}")
    set(TERMINALS_PC_${_dir} "${CMAKE_INSTALL_${_dir}}")
  else()
    set(TERMINALS_PC_${_dir} "\${prefix}/${CMAKE_INSTALL_${_dir}}")
  endif()
endforeach()
if(IS_ABSOLUTE "${TERMINALS_INSTALL_PKGCONFIGDIR}")
  set(TERMINALS_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _rel "/prefix/${TERMINALS_INSTALL_PKGCONFIGDIR}" "/prefix")
  string(REGEX REPLACE "/$" "" _rel "${_rel}")
  set(TERMINALS_PC_PREFIX "\${pcfiledir}/${_rel}")
endif()
get_target_property(TERMINALS_PC_LLHTTP terminals_llhttp OUTPUT_NAME)
configure_file("${CMAKE_CURRENT_LIST_DIR}/terminals.pc.in" "${PROJECT_BINARY_DIR}/terminals.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/terminals.pc" DESTINATION "${TERMINALS_INSTALL_PKGCONFIGDIR}")
