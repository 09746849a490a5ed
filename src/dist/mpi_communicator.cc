// The MPI back end (Open MPI): CPU tensors, MPI_COMM_WORLD, one process per rank.

#include <fmt/format.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dist/checks.h"
#include "dist/mpi_job.h"
#include "strata/core/error.h"
#include "strata/core/float_types.h"
#include "strata/dist/communicator.h"

#if STRATA_WITH_MPI
#include <mpi.h>
#endif

namespace strata::dist {

#if STRATA_WITH_MPI
namespace {

// MPI_Init once per process, MPI_Finalize at exit (unless someone else initialised MPI, in which
// case they finalise it). Errors come back as codes (MPI_ERRORS_RETURN) and become exceptions.
class MpiRuntime {
 public:
  static MpiRuntime& get() {
    static MpiRuntime runtime;
    return runtime;
  }
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Finalize();
  }
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

 private:
  MpiRuntime() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // Collectives are issued by one thread at a time (the model's forward); ops use their own
      // thread pool, which never calls MPI.
      const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      STRATA_CHECK(rc == MPI_SUCCESS, DeviceError,
                   "MPI_Init_thread failed (code {}); run under mpirun, or check the Open MPI "
                   "installation (ompi_info)",
                   rc);
      owned_ = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  bool owned_ = false;
};

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(rc, text, &length);
  STRATA_THROW(DeviceError, "{} failed: {} (MPI error {})", call, std::string(text, length), rc);
}

// MPI counts are ints: the largest number of elements sent in one call.
constexpr std::int64_t kMaxCount = INT_MAX / 2;

// MPI moves host memory: a tensor elsewhere (a GPU rank without NCCL) is staged through a host
// copy.
bool on_host(const Tensor& tensor) { return tensor.device().is_cpu(); }

int checked_count(std::size_t bytes, std::string_view op) {
  STRATA_CHECK(bytes <= static_cast<std::size_t>(INT_MAX), NotSupported,
               "{}: {} bytes in one message exceed MPI's int count; split the tensor", op, bytes);
  return static_cast<int>(bytes);
}

template <typename T>
void sum_rank_major(const T* gathered, T* out, std::int64_t n, int ranks) {
  for (std::int64_t i = 0; i < n; ++i) {
    float sum = 0.0f;
    for (int r = 0; r < ranks; ++r) sum += static_cast<float>(gathered[r * n + i]);
    out[i] = T(sum);
  }
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    MpiRuntime::get();
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string describe() const override { return fmt::format("mpi rank {} of {}", rank_, size_); }

  void all_reduce_sum(Tensor& tensor) override {
    detail::check_reducible(tensor, "all_reduce_sum");
    if (!on_host(tensor)) {
      Tensor host = tensor.to(Device::cpu());
      all_reduce_sum(host);
      tensor.copy_(host);
      return;
    }
    if (size_ == 1 || tensor.numel() == 0) return;
    if (tensor.dtype() == DType::Float32) {
      auto* data = static_cast<float*>(tensor.data_ptr());
      for (std::int64_t at = 0; at < tensor.numel(); at += kMaxCount) {
        const auto n = static_cast<int>(std::min(kMaxCount, tensor.numel() - at));
        check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + at, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
                  "MPI_Allreduce");
      }
      return;
    }
    // 16-bit floats: MPI has no such type. Gather every rank's values and sum them in float32
    // in rank order, rounding once: the same bits on every rank, and no rounding per hop.
    const Tensor gathered = all_gather(tensor);
    const std::int64_t n = tensor.numel();
    if (tensor.dtype() == DType::BFloat16) {
      sum_rank_major(static_cast<const BFloat16*>(gathered.data_ptr()),
                     static_cast<BFloat16*>(tensor.data_ptr()), n, size_);
    } else {
      sum_rank_major(static_cast<const Half*>(gathered.data_ptr()),
                     static_cast<Half*>(tensor.data_ptr()), n, size_);
    }
  }

  Tensor all_gather(const Tensor& input) override {
    STRATA_CHECK_ARG(!input.is_meta(), "all_gather: {} is a meta tensor (no data)",
                     input.describe());
    if (!on_host(input)) return all_gather(input.to(Device::cpu())).to(input.device());
    const Tensor local = input.contiguous();
    Shape shape = local.shape();
    shape.insert(shape.begin(), size_);
    Tensor out = Tensor::empty(shape, local.dtype());
    const int bytes = checked_count(local.nbytes(), "all_gather");
    if (bytes > 0) {
      check_mpi(MPI_Allgather(local.data_ptr(), bytes, MPI_BYTE, out.data_ptr(), bytes, MPI_BYTE,
                              MPI_COMM_WORLD),
                "MPI_Allgather");
    }
    return out;
  }

  void send(const Tensor& tensor, int peer) override {
    detail::check_transferable(tensor, "send");
    if (!on_host(tensor)) return send(tensor.to(Device::cpu()), peer);
    detail::check_rank(peer, size_, "send: peer");
    check_mpi(MPI_Send(tensor.data_ptr(), checked_count(tensor.nbytes(), "send"), MPI_BYTE, peer,
                       kTag, MPI_COMM_WORLD),
              "MPI_Send");
  }

  void recv(Tensor& tensor, int peer) override {
    detail::check_transferable(tensor, "recv");
    if (!on_host(tensor)) {
      Tensor host = tensor.to(Device::cpu());
      recv(host, peer);
      tensor.copy_(host);
      return;
    }
    detail::check_rank(peer, size_, "recv: peer");
    MPI_Status status;
    const int bytes = checked_count(tensor.nbytes(), "recv");
    const int rc =
        MPI_Recv(tensor.data_ptr(), bytes, MPI_BYTE, peer, kTag, MPI_COMM_WORLD, &status);
    STRATA_CHECK_ARG(rc != MPI_ERR_TRUNCATE,
                     "recv: rank {} sent more than the {} bytes of {}; receive into a tensor of "
                     "the sent shape and dtype",
                     peer, bytes, tensor.describe());
    check_mpi(rc, "MPI_Recv");
    int received = 0;
    MPI_Get_count(&status, MPI_BYTE, &received);
    STRATA_CHECK_ARG(received == bytes,
                     "recv: rank {} sent {} bytes, but {} holds {}; receive into a tensor of the "
                     "sent shape and dtype",
                     peer, received, tensor.describe(), bytes);
  }

  void broadcast(Tensor& tensor, int root) override {
    detail::check_transferable(tensor, "broadcast");
    if (!on_host(tensor)) {
      Tensor host = tensor.to(Device::cpu());
      broadcast(host, root);
      tensor.copy_(host);
      return;
    }
    detail::check_rank(root, size_, "broadcast: root");
    check_mpi(MPI_Bcast(tensor.data_ptr(), checked_count(tensor.nbytes(), "broadcast"), MPI_BYTE,
                        root, MPI_COMM_WORLD),
              "MPI_Bcast");
  }

  void barrier() override { check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

 private:
  static constexpr int kTag = 7;
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool mpi_built() { return true; }

std::shared_ptr<Communicator> mpi_communicator() {
  static const std::shared_ptr<Communicator> world = std::make_shared<MpiCommunicator>();
  return world;
}

namespace detail {
int mpi_local_rank() {
  mpi_communicator();
  MPI_Comm node;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  int local = 0;
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  return local;
}
}  // namespace detail

#else  // !STRATA_WITH_MPI

bool mpi_built() { return false; }

std::shared_ptr<Communicator> mpi_communicator() {
  STRATA_THROW(NotSupported,
               "this Strata was built without MPI, so it runs one process only; install Open "
               "MPI (Debian: libopenmpi-dev openmpi-bin, scripts/setup.sh) and rebuild");
}

namespace detail {
int mpi_local_rank() {
  mpi_communicator();
  return 0;
}
}  // namespace detail

#endif

}  // namespace strata::dist
