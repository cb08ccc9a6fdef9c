// Fused spatial attention (docs/DESIGN.md, "The fused ops"), the kernel behind torch.ops.jsla.attention.
// Specification: jsla_fast.ops.attention_reference (folded form of paper Eq. 1):
//   A     = LeakyReLU(F + Eh, slope)                       never written to memory
//   L     = conv2d(A, W[1,C,k,k], 'same' padding) + bias   one logit per position
//   alpha = softmax of L over the h*w positions ;  O = F * alpha
#pragma once

#include <cstdint>

#include "host.h"

namespace jsla {

struct AttentionShape {
  int64_t batch, channels, height, width, kernel;  // kernel: odd k of the k x k logit conv
};

// feat, eh: [B,C,h,w] with any element strides; weight: [C,k,k] contiguous; bias, slope: scalars.
// out: [B,C,h,w] written through out_strides; alpha: [B,h,w] contiguous.
template <typename T>
void attention_forward(const AttentionShape& shape, const T* feat, Strides4 feat_strides, const T* eh,
                       Strides4 eh_strides, const T* weight, T bias, T slope, T* out, Strides4 out_strides,
                       T* alpha, const Host& host);

}  // namespace jsla
