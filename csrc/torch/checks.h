// Argument checks of torch.ops.jsla.* shared by the CPU and CUDA bindings, so a wrong dtype,
// device, rank or shape gives the same message on every device. The Python entry points check
// first (jsla_fast/ops/checks.py); these guard memory safety when the ops are called directly.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>

#include "cpu/host.h"

namespace jsla {

inline Strides4 strides4(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// Where the op's implementation runs: its device, the dtypes it supports, and the hint for a
// tensor found elsewhere.
struct OpPlace {
  c10::DeviceType device;
  std::array<at::ScalarType, 3> dtypes;  // unused slots repeat a supported one
  const char* dtypes_text;  // e.g. "float32 and float64"
  const char* elsewhere;    // e.g. "use backend='cuda' or 'triton' for GPU tensors"
};

// `t` sits where `first` does and has its dtype.
inline void check_like(const at::Tensor& t, const at::Tensor& first, const char* op, const char* name,
                       const OpPlace& place) {
  TORCH_CHECK(t.device().type() == place.device, "jsla::", op, ": ", name, " is on ", t.device(), "; this ",
              c10::DeviceTypeName(place.device), " implementation runs on ", c10::DeviceTypeName(place.device),
              " tensors (", place.elsewhere, ")");
  TORCH_CHECK(t.device() == first.device(), "jsla::", op, ": ", name, " is on ", t.device(), " but the first input is on ",
              first.device(), "; move all inputs to one device");
  TORCH_CHECK(t.scalar_type() == first.scalar_type(), "jsla::", op, ": ", name, " has dtype ", t.scalar_type(),
              ", expected ", first.scalar_type(), " like the first input");
}

inline void check_dtype(const at::Tensor& first, const char* op, const char* name, const OpPlace& place) {
  bool ok = false;
  for (auto d : place.dtypes) ok = ok || first.scalar_type() == d;
  TORCH_CHECK(ok, "jsla::", op, ": ", name, " has dtype ", first.scalar_type(), "; the ",
              c10::DeviceTypeName(place.device), " implementation supports ", place.dtypes_text);
}

inline void check_4d(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 4, "jsla::", op, ": ", name, " must be 4-d [B,C,H,W], got shape ", t.sizes());
}

inline void check_attention(const at::Tensor& feat, const at::Tensor& eh, const at::Tensor& weight,
                            const at::Tensor& bias, const OpPlace& place) {
  const char* op = "attention";
  check_dtype(feat, op, "feat", place);
  for (auto [t, name] : {std::pair{&feat, "feat"}, {&eh, "eh"}, {&weight, "weight"}, {&bias, "bias"}})
    check_like(*t, feat, op, name, place);
  check_4d(feat, op, "feat");
  TORCH_CHECK(eh.sizes() == feat.sizes(), "jsla::attention: eh has shape ", eh.sizes(), " but feat has ",
              feat.sizes(), "; resize Eh to the feature map's grid first");
  const int64_t C = feat.size(1);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == 1 && weight.size(1) == C && weight.size(2) == weight.size(3) &&
                  weight.size(2) % 2 == 1,
              "jsla::attention: weight must be [1,", C, ",k,k] with k odd, got ", weight.sizes());
  TORCH_CHECK(bias.numel() == 1, "jsla::attention: bias must hold one value, got shape ", bias.sizes());
}

// Returns n, the hidden channels per branch.
inline int64_t check_convlstm(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                              at::TensorList weights, at::TensorList biases, const OpPlace& place) {
  const char* op = "convlstm_step";
  check_dtype(x, op, "x", place);
  for (auto [t, name] : {std::pair{&x, "x"}, {&h, "h"}, {&c, "c"}}) {
    check_like(*t, x, op, name, place);
    check_4d(*t, op, name);
  }
  TORCH_CHECK(h.sizes() == c.sizes(), "jsla::convlstm_step: h has shape ", h.sizes(), " but c has ", c.sizes());
  TORCH_CHECK(x.size(0) == h.size(0) && x.size(2) == h.size(2) && x.size(3) == h.size(3),
              "jsla::convlstm_step: x ", x.sizes(), " and h ", h.sizes(), " differ in batch or grid");
  TORCH_CHECK(!weights.empty() && weights.size() == biases.size(), "jsla::convlstm_step: got ", weights.size(),
              " weights and ", biases.size(), " biases; need one of each per branch");
  const int64_t D = x.size(1), hid = h.size(1), branches = static_cast<int64_t>(weights.size());
  TORCH_CHECK(hid % branches == 0, "jsla::convlstm_step: ", hid, " hidden channels do not split over ", branches,
              " branches");
  const int64_t n = hid / branches;
  for (int64_t i = 0; i < branches; ++i) {
    const auto& w = weights[i];
    const auto& b = biases[i];
    check_like(w, x, op, "weights[i]", place);
    check_like(b, x, op, "biases[i]", place);
    TORCH_CHECK(w.dim() == 4 && w.size(0) == 4 * n && w.size(1) == D + hid && w.size(2) == w.size(3) &&
                    w.size(2) % 2 == 1,
                "jsla::convlstm_step: weights[", i, "] must be [", 4 * n, ",", D + hid, ",k,k] with k odd, got ",
                w.sizes());
    TORCH_CHECK(b.dim() == 1 && b.size(0) == 4 * n, "jsla::convlstm_step: biases[", i, "] must be [", 4 * n,
                "], got ", b.sizes());
  }
  return n;
}

}  // namespace jsla
