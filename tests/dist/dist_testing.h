#pragma once
// The communicator the dist tests run on: MPI_COMM_WORLD under mpirun, else the single-process
// communicator (so the binary also runs, as one rank, without a launcher).

#include "strata/dist/communicator.h"

namespace strata::testing {

inline dist::Communicator& test_communicator() {
  static const std::shared_ptr<dist::Communicator> comm =
      dist::launched_by_mpirun() ? dist::mpi_communicator()
                                 : std::make_shared<dist::LocalCommunicator>();
  return *comm;
}

}  // namespace strata::testing
