#pragma once
// What the NCCL back end needs from the MPI job, without including mpi.h (private to src/dist).

namespace strata::dist::detail {

// This process's index among the job's processes on the same host (MPI_COMM_TYPE_SHARED):
// the GPU it uses by default. Initialises MPI like mpi_communicator(). Throws NotSupported
// without MPI.
int mpi_local_rank();

}  // namespace strata::dist::detail
