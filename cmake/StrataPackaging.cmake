# The Debian package, built by CPack from the install rules (cmake/StrataInstall.cmake):
#   cd build/release && cpack -G DEB    ->  strata_<version>_amd64.deb
# It installs under /usr: the command, libstrata.so/.a, the headers, the CMake package,
# strata.pc, the built-in model and the docs. Runtime dependencies come from dpkg-shlibdeps in CPU
# builds; a CUDA build also links the CUDA 13 toolkit's libraries, which are not Debian packages,
# so there the list is written out and the toolkit must be installed beside it.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME strata)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "Strata")
set(CPACK_PACKAGE_CONTACT "Strata maintainers")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "runtime for neural networks whose weights do not fit on one GPU")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "Strata runs Hugging Face checkpoints with memory budgets: it plans where every layer lives\n\
(GPUs, CPU RAM, disk), loads each tensor straight to its place and runs the model.\n\
This package holds the strata command, the C++ library (shared and static), its headers,\n\
CMake package and pkg-config file, and a small built-in model (stories260K).")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # strata_0.2.0_amd64.deb
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
if(STRATA_WITH_CUDA)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
  set(CPACK_DEBIAN_PACKAGE_DEPENDS
      "libc6, libstdc++6, libgcc-s1, libfmt9, libopenblas0, libonig5, libutf8proc2, libcpp-httplib0.11")
  if(STRATA_WITH_MPI)
    string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS ", libopenmpi3")
  endif()
else()
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
endif()
# What a program built against the headers or the static library needs.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS
    "libfmt-dev, nlohmann-json3-dev, libopenblas-dev, libonig-dev, libutf8proc-dev, libcpp-httplib-dev, pkg-config")
# ldconfig runs after install and removal, so libstrata.so is found at once.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_CURRENT_LIST_DIR}/debian/triggers)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Only the install rules above go in (no test or benchmark binaries, which have none).
include(CPack)
