// The single-process communicator, launcher detection and the choice of back end for
// --tensor-parallel.

#include "strata/dist/communicator.h"

#include <cstdlib>

#include "dist/checks.h"
#include "strata/core/error.h"

namespace strata::dist {

void LocalCommunicator::all_reduce_sum(Tensor& tensor) {
  detail::check_reducible(tensor, "all_reduce_sum");  // the same rules as on several ranks
}

Tensor LocalCommunicator::all_gather(const Tensor& input) {
  Shape shape = input.shape();
  shape.insert(shape.begin(), 1);
  return input.contiguous().view(shape);
}

void LocalCommunicator::send(const Tensor&, int peer) {
  STRATA_THROW(InvalidArgument,
               "send: rank {} does not exist in a single-process communicator (size 1); launch "
               "with mpirun -np N",
               peer);
}

void LocalCommunicator::recv(Tensor&, int peer) {
  STRATA_THROW(InvalidArgument,
               "recv: rank {} does not exist in a single-process communicator (size 1); launch "
               "with mpirun -np N",
               peer);
}

void LocalCommunicator::broadcast(Tensor& tensor, int root) {
  detail::check_rank(root, 1, "broadcast root");
}

bool launched_by_mpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && std::atoi(value) > 1) return true;
  }
  return false;
}

std::shared_ptr<Communicator> communicator_for(int tensor_parallel, bool use_gpus) {
  STRATA_CHECK_ARG(tensor_parallel >= 1, "--tensor-parallel {}: it must be at least 1",
                   tensor_parallel);
  if (tensor_parallel == 1 && !launched_by_mpirun()) return std::make_shared<LocalCommunicator>();
  std::shared_ptr<Communicator> comm = use_gpus ? nccl_communicator() : mpi_communicator();
  STRATA_CHECK_ARG(comm->size() == tensor_parallel,
                   "--tensor-parallel {}: this job has {} process(es) ({}); start one process "
                   "per rank: mpirun -np {} strata ... --tensor-parallel {}",
                   tensor_parallel, comm->size(), comm->describe(), tensor_parallel,
                   tensor_parallel);
  return comm;
}

}  // namespace strata::dist
