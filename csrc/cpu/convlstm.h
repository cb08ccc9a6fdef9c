// Multi-kernel ConvLSTM step (docs/DESIGN.md, "The fused ops"), the kernel behind torch.ops.jsla.convlstm_step.
// Specification: jsla_fast.ops.convlstm_step_reference:
//   xh = [x, h] (D + hid channels); branch b (kernel k_b, 'same' padding) gives the gate
//   pre-activations i, f, g, o (n channels each, n = hid / branches) of hidden channels
//   [b*n, (b+1)*n); c' = sig(f) c + sig(i) tanh(g) ; h' = sig(o) tanh(c').
// The gates are not written to memory as a [B,4*hid,H,W] tensor: the LSTM update is the
// epilogue of the convolution.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "host.h"

namespace jsla {

struct ConvLSTMShape {
  int64_t batch, input_channels, hidden_channels, height, width;  // D, hid, H, W
};

// The weights in the form the kernel consumes (packed / transformed), built once per weight
// version: inference reuses it across calls, training rebuilds it after each optimizer step.
template <typename T>
class ConvLSTMWeights {
 public:
  // weights[b]: [4n, D+hid, k_b, k_b] contiguous; biases[b]: [4n]; kernel_sizes[b] odd.
  ConvLSTMWeights(int64_t input_channels, int64_t hidden_channels, const std::vector<int64_t>& kernel_sizes,
                  const std::vector<const T*>& weights, const std::vector<const T*>& biases, const Host& host);
  ~ConvLSTMWeights();
  ConvLSTMWeights(const ConvLSTMWeights&) = delete;
  ConvLSTMWeights& operator=(const ConvLSTMWeights&) = delete;

  int64_t input_channels() const;
  int64_t hidden_channels() const;
  const std::vector<int64_t>& kernel_sizes() const;

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// x: [B,D,H,W], h, c: [B,hid,H,W], any element strides. h_out, c_out: [B,hid,H,W] written
// through their strides. Requires shape.input_channels/hidden_channels == the weights'.
template <typename T>
void convlstm_step_forward(const ConvLSTMWeights<T>& weights, const ConvLSTMShape& shape, const T* x,
                           Strides4 x_strides, const T* h, Strides4 h_strides, const T* c, Strides4 c_strides,
                           T* h_out, Strides4 h_out_strides, T* c_out, Strides4 c_out_strides, const Host& host);

}  // namespace jsla
