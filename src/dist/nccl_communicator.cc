// The NCCL back end: CUDA tensors, one process per GPU, the unique id broadcast through MPI.
// Compiled in CUDA builds that found NCCL (STRATA_WITH_NCCL); never run on CPU-only machines.

#include <fmt/format.h>

#include "dist/checks.h"
#include "dist/mpi_job.h"
#include "strata/core/error.h"
#include "strata/dist/communicator.h"

#if STRATA_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "strata/cuda/stream.h"
#endif

namespace strata::dist {

#if STRATA_WITH_NCCL
namespace {

void check_nccl(ncclResult_t rc, const char* call) {
  STRATA_CHECK(rc == ncclSuccess, DeviceError,
               "{} failed: {} (NCCL error {}); NCCL_DEBUG=INFO "
               "in the environment of every rank tells more",
               call, ncclGetErrorString(rc), static_cast<int>(rc));
}

void check_cuda(cudaError_t rc, const char* call) {
  STRATA_CHECK(rc == cudaSuccess, DeviceError, "{} failed: {}", call, cudaGetErrorString(rc));
}

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::Float32:
      return ncclFloat32;
    case DType::BFloat16:
      return ncclBfloat16;
    case DType::Float16:
      return ncclFloat16;
    default:
      return ncclUint8;  // byte-wise transfers
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<Communicator> mpi, int device)
      : mpi_(std::move(mpi)), device_(device) {
    rank_ = mpi_->rank();
    size_ = mpi_->size();
    int count = 0;
    check_cuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    STRATA_CHECK(count > 0, DeviceError, "nccl rank {}: this host has no usable GPU", rank_);
    if (device_ < 0) device_ = detail::mpi_local_rank() % count;  // one GPU per local process
    STRATA_CHECK(device_ < count, DeviceError,
                 "nccl rank {}: GPU {} does not exist (this host has {}); start at most one "
                 "process per GPU on each host",
                 rank_, device_, count);
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id;
    Tensor id_bytes = Tensor::zeros({static_cast<std::int64_t>(sizeof(id))}, DType::UInt8);
    if (rank_ == 0) {
      check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
      std::memcpy(id_bytes.data_ptr(), &id, sizeof(id));
    }
    mpi_->broadcast(id_bytes, 0);
    std::memcpy(&id, id_bytes.data_ptr(), sizeof(id));
    check_nccl(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
  }
  ~NcclCommunicator() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string describe() const override {
    return fmt::format("nccl rank {} of {} (cuda:{})", rank_, size_, device_);
  }

  // CPU tensors (a rank whose plan keeps a layer on the cpu) go through MPI.
  void all_reduce_sum(Tensor& tensor) override {
    if (tensor.device().is_cpu()) return mpi_->all_reduce_sum(tensor);
    detail::check_reducible(tensor, "all_reduce_sum");
    check_here(tensor, "all_reduce_sum");
    check_nccl(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(),
                             static_cast<std::size_t>(tensor.numel()), nccl_type(tensor.dtype()),
                             ncclSum, comm_, stream()),
               "ncclAllReduce");
  }

  Tensor all_gather(const Tensor& input) override {
    if (input.device().is_cpu()) return mpi_->all_gather(input);
    check_here(input, "all_gather");
    const Tensor local = input.contiguous();
    Shape shape = local.shape();
    shape.insert(shape.begin(), size_);
    Tensor out = Tensor::empty(shape, local.dtype(), local.device());
    check_nccl(
        ncclAllGather(local.data_ptr(), out.data_ptr(), local.nbytes(), ncclUint8, comm_, stream()),
        "ncclAllGather");
    return out;
  }

  void send(const Tensor& tensor, int peer) override {
    if (tensor.device().is_cpu()) return mpi_->send(tensor, peer);
    detail::check_transferable(tensor, "send");
    check_here(tensor, "send");
    detail::check_rank(peer, size_, "send: peer");
    check_nccl(ncclSend(tensor.data_ptr(), tensor.nbytes(), ncclUint8, peer, comm_, stream()),
               "ncclSend");
  }

  void recv(Tensor& tensor, int peer) override {
    if (tensor.device().is_cpu()) return mpi_->recv(tensor, peer);
    detail::check_transferable(tensor, "recv");
    check_here(tensor, "recv");
    detail::check_rank(peer, size_, "recv: peer");
    check_nccl(ncclRecv(tensor.data_ptr(), tensor.nbytes(), ncclUint8, peer, comm_, stream()),
               "ncclRecv");
  }

  void broadcast(Tensor& tensor, int root) override {
    if (tensor.device().is_cpu()) return mpi_->broadcast(tensor, root);
    detail::check_transferable(tensor, "broadcast");
    check_here(tensor, "broadcast");
    detail::check_rank(root, size_, "broadcast: root");
    check_nccl(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.nbytes(), ncclUint8, root,
                             comm_, stream()),
               "ncclBroadcast");
  }

  void barrier() override {
    cuda::Stream::compute(device_).synchronize();
    mpi_->barrier();
  }

 private:
  cudaStream_t stream() const {
    return static_cast<cudaStream_t>(cuda::Stream::compute(device_).native_handle());
  }
  void check_here(const Tensor& tensor, std::string_view op) const {
    STRATA_CHECK_ARG(tensor.device() == Device::cuda(device_),
                     "{}: {} is on {}, but this NCCL rank works on cuda:{}; move it there first",
                     op, tensor.describe(), tensor.device(), device_);
  }

  std::shared_ptr<Communicator> mpi_;
  int device_ = 0, rank_ = 0, size_ = 1;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

bool nccl_built() { return true; }

std::shared_ptr<Communicator> nccl_communicator(int device) {
  std::shared_ptr<Communicator> mpi = mpi_communicator();
  return std::make_shared<NcclCommunicator>(std::move(mpi), device);
}

#else  // !STRATA_WITH_NCCL

bool nccl_built() { return false; }

std::shared_ptr<Communicator> nccl_communicator(int) {
  STRATA_THROW(NotSupported,
               "this Strata was built without NCCL, so tensor parallelism runs on CPU ranks only "
               "(MPI); build with CUDA and NCCL (libnccl in /usr/local/cuda or the system) for "
               "GPU ranks");
}

#endif

}  // namespace strata::dist
