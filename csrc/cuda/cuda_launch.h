// Launch helpers for gptcore's CUDA kernels using only the CUDA runtime (torch's CPU wheels ship
// no c10/cuda configuration headers, and these files must compile with `nvcc -c` there too).
// Kernels run on the legacy default stream (0), which orders them with torch's default stream.
#pragma once
#include <ATen/core/Tensor.h>
#include <cuda_runtime.h>

namespace gptcore {

// Makes `t`'s device current for the scope, restoring the previous one after.
class DeviceScope {
 public:
  explicit DeviceScope(const at::Tensor& t) {
    cudaGetDevice(&previous_);
    cudaSetDevice(t.device().index());
  }
  ~DeviceScope() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "gptcore: ", what, " kernel launch failed: ",
              cudaGetErrorString(err));
}

inline unsigned grid_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace gptcore
