# What `cmake --install` puts under the prefix (docs/packaging.md has the layout):
#   bin/strata                                  the command (linked statically with libstrata)
#   lib/libstrata.so.X.Y.Z, lib/libstrata.a     the library, shared and static, same objects
#   lib/libstrata_cuda.a                        CUDA kernels the static library needs (CUDA builds)
#   include/strata/...                          public headers, including the generated version.h
#   lib/cmake/strata/                           find_package(strata CONFIG): strata::strata
#   lib/pkgconfig/strata.pc                     pkg-config --cflags --libs strata
#   share/strata/models/stories260K/            the built-in model, its LICENSE and PROVENANCE.md
#   share/man/man1/strata.1                     the man page (the command's --help texts)
#   share/doc/strata/                           README, CHANGELOG, packaging notes
# Every path is relative to the prefix, so the tree can be moved (a scratch prefix, a .deb under
# /usr, a `dpkg -x` root): the CMake package, strata.pc and the command all locate themselves.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(STRATA_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/strata)

set(_strata_install_targets strata)
if(TARGET strata_shared)
  list(APPEND _strata_install_targets strata_shared)
endif()
if(STRATA_WITH_CUDA)
  list(APPEND _strata_install_targets strata_cuda)  # linked into libstrata.a's users
endif()
install(TARGETS ${_strata_install_targets} EXPORT strataTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS strata_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# strata(1), written at build time from the command's own --help texts (cmake/StrataManPage.cmake).
# Not in sanitizer builds, which are never installed (and whose leak checker runs at exit).
if(NOT STRATA_SANITIZE)
  set(STRATA_MAN_PAGE ${PROJECT_BINARY_DIR}/strata.1)
  add_custom_command(
    OUTPUT ${STRATA_MAN_PAGE}
    COMMAND ${CMAKE_COMMAND} -DSTRATA=$<TARGET_FILE:strata_cli> -DVERSION=${PROJECT_VERSION}
            -DOUTPUT=${STRATA_MAN_PAGE} -P ${PROJECT_SOURCE_DIR}/cmake/StrataManPage.cmake
    DEPENDS strata_cli ${PROJECT_SOURCE_DIR}/cmake/StrataManPage.cmake
    COMMENT "Writing the strata(1) man page from strata --help")
  add_custom_target(strata_man_page ALL DEPENDS ${STRATA_MAN_PAGE})
  install(FILES ${STRATA_MAN_PAGE} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
endif()

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/strata DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_BINARY_DIR}/include/strata/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/strata)

# The CMake package.
install(EXPORT strataTargets NAMESPACE strata:: DESTINATION ${STRATA_INSTALL_CMAKEDIR})
if(STRATA_WITH_CUDA)
  set(STRATA_CONFIG_WITH_CUDA ON)
else()
  set(STRATA_CONFIG_WITH_CUDA OFF)
endif()
if(STRATA_WITH_MPI)
  set(STRATA_CONFIG_WITH_MPI ON)
else()
  set(STRATA_CONFIG_WITH_MPI OFF)
endif()
if(STRATA_WITH_NCCL)
  set(STRATA_CONFIG_WITH_NCCL ON)
else()
  set(STRATA_CONFIG_WITH_NCCL OFF)
endif()
if(TARGET strata_shared)
  set(STRATA_CONFIG_HAS_SHARED ON)
else()
  set(STRATA_CONFIG_HAS_SHARED OFF)
endif()
set(STRATA_INSTALL_MODEL_DIR ${CMAKE_INSTALL_DATADIR}/strata/models/stories260K)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/strataConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/strataConfig.cmake
                              INSTALL_DESTINATION ${STRATA_INSTALL_CMAKEDIR}
                              PATH_VARS STRATA_INSTALL_MODEL_DIR)
# Before 1.0 the API changes with the minor version: 0.2.x accepts a request for 0.2.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/strataConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/strataConfig.cmake ${PROJECT_BINARY_DIR}/strataConfigVersion.cmake
        DESTINATION ${STRATA_INSTALL_CMAKEDIR})

# pkg-config: the prefix is found from the .pc file's own place (${pcfiledir}).
file(RELATIVE_PATH STRATA_PC_TO_PREFIX /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" STRATA_PC_TO_PREFIX "${STRATA_PC_TO_PREFIX}")
set(STRATA_PC_LIBS_PRIVATE "-lopenblas -lonig -lutf8proc -lcpp-httplib")
if(STRATA_WITH_CUDA)
  string(APPEND STRATA_PC_LIBS_PRIVATE
         " -lstrata_cuda -L${CUDAToolkit_LIBRARY_DIR} -lcublasLt -lcublas -lcudart_static -ldl -lrt")
endif()
if(STRATA_WITH_MPI)
  string(APPEND STRATA_PC_LIBS_PRIVATE " -lmpi")
endif()
if(STRATA_WITH_NCCL)
  get_filename_component(_strata_nccl_dir "${STRATA_NCCL_LIBRARY}" DIRECTORY)
  string(APPEND STRATA_PC_LIBS_PRIVATE " -L${_strata_nccl_dir} -lnccl")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/strata.pc.in ${PROJECT_BINARY_DIR}/strata.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/strata.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# The built-in model, where `strata` looks for it: <bin>/../share/strata/models/stories260K.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/models/stories260K
        DESTINATION ${CMAKE_INSTALL_DATADIR}/strata/models)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/CHANGELOG.md
              ${PROJECT_SOURCE_DIR}/docs/packaging.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
