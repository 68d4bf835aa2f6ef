# Install rules: headers, both libraries, the CLI, the CMake package (openmlaConfig.cmake,
# openmlaConfigVersion.cmake, exported targets openmla::openmla and openmla::openmla_static)
# and openmla.pc. Included from the top-level CMakeLists.txt when OPENMLA_INSTALL is ON.
include(CMakePackageConfigHelpers)

set(OPENMLA_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/openmla)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/openmla
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT openmla_dev)
install(TARGETS openmla_shared openmla_static EXPORT openmlaTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT openmla_runtime
                NAMELINK_COMPONENT openmla_dev
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT openmla_dev
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET openmla_cli)
  install(TARGETS openmla_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT openmla_runtime)
endif()

install(EXPORT openmlaTargets NAMESPACE openmla:: DESTINATION ${OPENMLA_CMAKE_DIR}
        COMPONENT openmla_dev)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/openmlaConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/openmlaConfig.cmake
                              INSTALL_DESTINATION ${OPENMLA_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/openmlaConfigVersion.cmake
                                 COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/openmlaConfig.cmake
              ${PROJECT_BINARY_DIR}/openmlaConfigVersion.cmake
        DESTINATION ${OPENMLA_CMAKE_DIR} COMPONENT openmla_dev)

# pkg-config: Libs carries an rpath to libdir, so `-lopenmla` runs without LD_LIBRARY_PATH
# from any prefix (Debian-style system prefixes ignore a redundant rpath to /usr/lib).
# ${pcfiledir}-relative paths keep the installed tree relocatable.
file(RELATIVE_PATH OPENMLA_PC_TO_PREFIX
     ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" OPENMLA_PC_TO_PREFIX "${OPENMLA_PC_TO_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/openmla.pc.in ${PROJECT_BINARY_DIR}/openmla.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/openmla.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT openmla_dev)
