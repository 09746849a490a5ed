#pragma once
// Communicator: the collectives tensor-parallel execution needs, behind one interface with three
// back ends (docs/distributed.md):
//   LocalCommunicator  one process (size 1): every collective is the identity, so code written
//                      for several ranks runs unchanged without MPI.
//   MPI                CPU tensors (others staged through a host copy), one process per rank,
//                      launched by `mpirun` (Open MPI): ranks on one host or on several.
//   NCCL               CUDA tensors, one process per GPU; the NCCL unique id travels through MPI
//                      (CUDA builds with NCCL; mpirun is still the launcher).
//
// Collectives are blocking from the caller's point of view for MPI; NCCL ones are queued on the
// tensor's device compute stream (cuda::Stream::compute), so later ops on that stream see the
// result, as for any op. Every rank must call the same collectives in the same order with the
// same shapes and dtypes; a tensor another rank does not match is an error of the caller (MPI
// reports it as it can, usually by truncation errors).

#include <cstdint>
#include <memory>
#include <string>

#include "strata/core/tensor.h"

namespace strata::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "local (1 rank)", "mpi rank 1 of 4", "nccl rank 0 of 2 (cuda:0)": for messages.
  virtual std::string describe() const = 0;

  // In place: every rank's `tensor` becomes the element-wise sum over all ranks. float32,
  // bfloat16 or float16, contiguous. Half types are summed in float32 and rounded once per
  // element on MPI (NCCL sums in the type, as PyTorch's all_reduce does). Every rank ends with
  // bitwise the same values.
  virtual void all_reduce_sum(Tensor& tensor) = 0;
  // Every rank's `input` (same shape and dtype everywhere, any dtype) stacked in rank order:
  // returns [size, ...input.shape] on input's device.
  virtual Tensor all_gather(const Tensor& input) = 0;
  // Point to point: `tensor` (contiguous) goes to rank `peer`, which receives into a tensor of
  // the same shape and dtype.
  virtual void send(const Tensor& tensor, int peer) = 0;
  virtual void recv(Tensor& tensor, int peer) = 0;
  // In place: every rank's `tensor` (contiguous) becomes the one of rank `root`.
  virtual void broadcast(Tensor& tensor, int root) = 0;
  // Returns when every rank has called it.
  virtual void barrier() = 0;
};

// One process, size 1.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string describe() const override { return "local (1 rank)"; }
  void all_reduce_sum(Tensor& tensor) override;
  Tensor all_gather(const Tensor& input) override;
  void send(const Tensor& tensor, int peer) override;
  void recv(Tensor& tensor, int peer) override;
  void broadcast(Tensor& tensor, int root) override;
  void barrier() override {}
};

// True when this library was built with MPI (Open MPI found at configure time).
bool mpi_built();
// True when this process was started by a launcher (mpirun/mpiexec, srun) that set the
// environment of an MPI job of more than one process (OMPI_COMM_WORLD_SIZE, PMI_SIZE, ...).
bool launched_by_mpirun();

// The MPI communicator of the job (MPI_COMM_WORLD). MPI is initialised on the first call and
// finalised at process exit; later calls return the same communicator. A process started
// without mpirun is a job of size 1. Throws NotSupported when the library was built without MPI.
std::shared_ptr<Communicator> mpi_communicator();

// True when this library was built with NCCL (CUDA builds that found nccl.h and libnccl).
bool nccl_built();
// A NCCL communicator over the MPI job: one rank per process, on GPU `device` (by default the
// rank's index among the processes of its host modulo the visible GPUs, so `mpirun -np 2` on a
// 2-GPU host uses cuda:0 and cuda:1, and a rank that sees one GPU (CUDA_VISIBLE_DEVICES) uses
// it). Rank 0 creates the NCCL unique id and broadcasts it through MPI. CPU tensors go through
// MPI (a rank that keeps some layers on the cpu). Throws NotSupported without NCCL or MPI,
// DeviceError when the GPU is missing or NCCL fails.
std::shared_ptr<Communicator> nccl_communicator(int device = -1);

// The communicator `--tensor-parallel N` runs on: local for N = 1; otherwise MPI (CPU) or NCCL
// (`use_gpus`), whose size must be N: a job of another size is an InvalidArgument saying how to
// launch it (`mpirun -np N strata ...`).
std::shared_ptr<Communicator> communicator_for(int tensor_parallel, bool use_gpus);

}  // namespace strata::dist
