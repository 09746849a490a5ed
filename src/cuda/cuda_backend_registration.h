#pragma once
// Called once by the core (find_backend) in CUDA builds: registers the CUDA backend when a GPU
// and a driver are present. Static self-registration would be dropped by the linker.

namespace strata::cuda {

void register_cuda_backend_if_present();

}  // namespace strata::cuda
