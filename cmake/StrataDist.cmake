# The communicator back ends (src/dist, docs/distributed.md). MPI (Open MPI: Debian's
# libopenmpi-dev + openmpi-bin, which scripts/setup.sh installs) is optional: without it Strata
# runs one process and --tensor-parallel N > 1 is a clear error. CI has it, so the multi-rank
# tests run there. NCCL (CUDA builds): from the CUDA toolkit or the system; it needs MPI too
# (the unique id is broadcast through it).
# Sets STRATA_WITH_MPI, STRATA_WITH_NCCL, STRATA_MPIEXEC (the launcher the tests use).
set(STRATA_MPI AUTO CACHE STRING "Build the MPI communicator: AUTO (if found), ON, OFF")
set_property(CACHE STRATA_MPI PROPERTY STRINGS AUTO ON OFF)
set(STRATA_WITH_MPI OFF)
set(STRATA_WITH_NCCL OFF)
if(NOT STRATA_MPI STREQUAL "OFF")
  set(MPI_CXX_SKIP_MPICXX ON)  # the C API only (no deprecated C++ bindings)
  find_package(MPI COMPONENTS CXX QUIET)
  if(MPI_CXX_FOUND)
    set(STRATA_WITH_MPI ON)
    set(STRATA_MPIEXEC ${MPIEXEC_EXECUTABLE})
  elseif(STRATA_MPI STREQUAL "ON")
    message(FATAL_ERROR "STRATA_MPI=ON but MPI was not found: install libopenmpi-dev openmpi-bin "
                        "(scripts/setup.sh does it)")
  endif()
endif()
if(STRATA_WITH_CUDA AND STRATA_WITH_MPI)
  find_path(STRATA_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
  find_library(STRATA_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
  if(STRATA_NCCL_INCLUDE_DIR AND STRATA_NCCL_LIBRARY)
    set(STRATA_WITH_NCCL ON)
  endif()
endif()
message(STATUS "Strata communicators: MPI ${STRATA_WITH_MPI}, NCCL ${STRATA_WITH_NCCL}")
