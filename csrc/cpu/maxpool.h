// Max pooling over channels-last (NHWC) maps, the kernel behind torch.ops.jsla.max_pool2d: the
// backbone's 13 pools (GoogLeNet's four stride-2 pools and each Inception block's 3x3 stride-1
// pool) at inference. Specification: torch.nn.functional.max_pool2d (dilation 1, any padding,
// ceil_mode's output size computed by the caller), NaN propagating as there.
//
// Cost: k*k comparisons per output value and, at least, the input read once and the output
// written once; no arithmetic to speak of, so the floor is the bytes: for the largest pool of the
// model (64x112x112 -> 64x56x56, fp32) 3.2 MB + 0.8 MB, 0.08 ms at 52 GB/s. torch's own
// channels-last pool takes several times that (it computes the argmax indices too, per element).
// Each output pixel keeps 16 channels per AVX-512 register across its window's taps (portable loops
// without AVX-512). Measured (2 threads, Xeon with AVX-512): 3x torch's pool, 0.45 ms for all 13.
#pragma once

#include <cstdint>

#include "host.h"

namespace jsla {

struct PoolShape {
  int64_t batch, channels, height, width;   // input [B,C,H,W]
  int64_t out_height, out_width;            // output [B,C,OH,OW]
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
};

// x, y: dense NHWC ([B,H,W,C] in memory). T: float, double, or uint16_t holding bfloat16 bits
// (compared as the float it widens to; the result is one of the inputs, so exact).
// Every window must overlap the input (true for torch's output sizes, ceil_mode included).
template <typename T>
void max_pool2d_nhwc(const PoolShape& shape, const T* x, T* y, const Host& host);

}  // namespace jsla
