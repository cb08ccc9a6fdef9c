// Device facts the launchers size their grids by, cached per device: a property query costs
// microseconds, a launch should not.
#include <mutex>
#include <vector>

#include "cuda/kernels.h"

namespace jsla {
namespace cuda {

int multiprocessor_count(int device) {
  static std::mutex mutex;
  static std::vector<int> counts;
  std::lock_guard<std::mutex> lock(mutex);
  if (device < 0) device = 0;
  if (static_cast<size_t>(device) >= counts.size()) counts.resize(device + 1, 0);
  if (counts[device] == 0) {
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) {
      cudaGetLastError();  // clear it: the launch that follows reports any real problem
      n = 108;             // an A100's count: a reasonable grid on any sm_80+ part
    }
    counts[device] = n;
  }
  return counts[device];
}

}  // namespace cuda
}  // namespace jsla
