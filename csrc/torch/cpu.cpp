// CPU implementations of torch.ops.jsla.*: argument checks, output allocation and the Host
// (at::parallel_for, torch's BLAS) around the torch-free kernels of csrc/cpu.
#include <ATen/ATen.h>  // not <torch/torch.h>: the whole C++ frontend took this file 5x longer to compile
#include <ATen/Parallel.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/library.h>

#include <list>
#include <memory>
#include <mutex>

#include "cpu/attention.h"
#include "cpu/convlstm.h"
#include "cpu/maxpool.h"
#include "torch/checks.h"

namespace jsla {
namespace {

using at::Tensor;

template <typename T>
void torch_batched_gemm(int64_t batch, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, int64_t stride_a,
                        const T* b, int64_t ldb, int64_t stride_b, T* c, int64_t ldc, int64_t stride_c) {
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto A = at::from_blob(const_cast<T*>(a), {batch, m, k}, {stride_a, lda, 1}, opts);
  auto B = at::from_blob(const_cast<T*>(b), {batch, k, n}, {stride_b, ldb, 1}, opts);
  auto C = at::from_blob(c, {batch, m, n}, {stride_c, ldc, 1}, opts);
  at::bmm_out(C, A, B);
}

const Host& torch_host() {
  static const Host host = [] {
    Host h;
    h.parallel_for = [](int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
      at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { body(begin, end); });
    };
    h.sgemm = torch_batched_gemm<float>;
    h.dgemm = torch_batched_gemm<double>;
    return h;
  }();
  return host;
}

// bfloat16 is a storage type here: the kernels compute in float32 (inputs widened on entry, outputs
// rounded once on exit), so a bf16 model keeps fp32 accumulation and fp32's accuracy in these ops.
const OpPlace kCpu{c10::DeviceType::CPU, {at::kFloat, at::kDouble, at::kBFloat16}, "float32, float64 and bfloat16",
                   "use backend='cuda' or 'triton' for GPU tensors"};

// -- attention ------------------------------------------------------------------------------
// The kernel on float32/float64 tensors, into `out` and `alpha` (allocated by the caller).
void attention_into(const Tensor& feat, const Tensor& eh, const Tensor& weight, const Tensor& bias, double slope,
                    Tensor& out, Tensor& alpha) {
  if (feat.numel() == 0) return;
  auto w = weight.contiguous();
  AttentionShape shape{feat.size(0), feat.size(1), feat.size(2), feat.size(3), weight.size(2)};
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "jsla_attention", [&] {
    attention_forward<scalar_t>(shape, feat.const_data_ptr<scalar_t>(), strides4(feat), eh.const_data_ptr<scalar_t>(),
                                strides4(eh), w.const_data_ptr<scalar_t>(), bias.item<scalar_t>(),
                                static_cast<scalar_t>(slope), out.mutable_data_ptr<scalar_t>(), strides4(out),
                                alpha.mutable_data_ptr<scalar_t>(), torch_host());
  });
}

std::tuple<Tensor, Tensor> attention_cpu(const Tensor& feat, const Tensor& eh, const Tensor& weight,
                                         const Tensor& bias, double slope) {
  check_attention(feat, eh, weight, bias, kCpu);
  auto out = at::empty_like(feat);
  auto alpha = at::empty({feat.size(0), 1, feat.size(2), feat.size(3)}, feat.options());
  if (feat.scalar_type() != at::kBFloat16) {
    attention_into(feat, eh, weight, bias, slope, out, alpha);
    return {out, alpha};
  }
  // bf16: one sample at a time through float32 buffers reused across the batch, so the widened
  // copies stay in cache (the whole batch's would be 8 bytes per input element, 240 MB for 40
  // images on 3b, written and read back through DRAM: measured 45 % of a batch-40 frame)
  auto w32 = weight.to(at::kFloat), b32 = bias.to(at::kFloat);
  Tensor f32, e32, o32, a32;
  for (int64_t b = 0; b < feat.size(0); ++b) {
    auto fb = feat.narrow(0, b, 1), eb = eh.narrow(0, b, 1);
    if (b == 0) {
      f32 = at::empty_like(fb, fb.options().dtype(at::kFloat));
      e32 = at::empty_like(eb, eb.options().dtype(at::kFloat));
      o32 = at::empty_like(f32);
      a32 = at::empty({1, 1, feat.size(2), feat.size(3)}, f32.options());
    }
    f32.copy_(fb);
    e32.copy_(eb);
    attention_into(f32, e32, w32, b32, slope, o32, a32);
    out.narrow(0, b, 1).copy_(o32);
    alpha.narrow(0, b, 1).copy_(a32);
  }
  return {out, alpha};
}

// -- ConvLSTM step ----------------------------------------------------------------------------
// Packed weights are cached per (tensor, version) for weights that do not require grad (an
// inference runtime such as jsla_fast.runtime.Localizer, which freezes its parameters): packed
// once, repacked after any in-place change that bumps the version (copy_, load_state_dict).
// Weights that require grad are packed on every call: training, and tools such as gradcheck
// that perturb them through .data (which bypasses the version counter). Inference tensors
// carry no version counter and are packed on every call too.
struct CacheEntry {
  std::vector<c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>> tensors;
  std::vector<const void*> data;
  std::vector<uint32_t> versions;
  std::shared_ptr<void> packed;
};

class WeightCache {
 public:
  template <typename T>
  std::shared_ptr<const ConvLSTMWeights<T>> get(at::TensorList ws, at::TensorList bs, int64_t D, int64_t hid) {
    std::vector<Tensor> all(ws.begin(), ws.end());
    all.insert(all.end(), bs.begin(), bs.end());
    bool cacheable = true;
    for (const auto& t : all) cacheable = cacheable && !t.is_inference() && !t.requires_grad();
    if (cacheable) {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (matches(*it, all)) {
          entries_.splice(entries_.begin(), entries_, it);  // most recently used first
          return std::static_pointer_cast<const ConvLSTMWeights<T>>(it->packed);
        }
      }
    }
    auto packed = pack<T>(ws, bs, D, hid);
    if (cacheable) {
      CacheEntry e;
      for (const auto& t : all) {
        e.tensors.emplace_back(t.getIntrusivePtr());
        e.data.push_back(t.const_data_ptr());
        e.versions.push_back(t._version());
      }
      e.packed = std::const_pointer_cast<ConvLSTMWeights<T>>(packed);
      std::lock_guard<std::mutex> lock(mutex_);
      entries_.push_front(std::move(e));
      if (entries_.size() > kCapacity) entries_.pop_back();
    }
    return packed;
  }

 private:
  static constexpr size_t kCapacity = 8;

  static bool matches(const CacheEntry& e, const std::vector<Tensor>& all) {
    if (e.tensors.size() != all.size()) return false;
    for (size_t i = 0; i < all.size(); ++i) {
      auto alive = e.tensors[i].lock();
      if (!alive || alive.get() != all[i].unsafeGetTensorImpl() || e.data[i] != all[i].const_data_ptr() ||
          e.versions[i] != all[i]._version())
        return false;
    }
    return true;
  }

  template <typename T>
  static std::shared_ptr<const ConvLSTMWeights<T>> pack(at::TensorList ws, at::TensorList bs, int64_t D,
                                                        int64_t hid) {
    std::vector<int64_t> ks;
    std::vector<Tensor> held;  // contiguous copies live until packing is done
    std::vector<const T*> wp, bp;
    for (size_t i = 0; i < ws.size(); ++i) {
      ks.push_back(ws[i].size(2));
      held.push_back(ws[i].to(c10::CppTypeToScalarType<T>::value).contiguous());
      wp.push_back(held.back().const_data_ptr<T>());
      held.push_back(bs[i].to(c10::CppTypeToScalarType<T>::value).contiguous());
      bp.push_back(held.back().const_data_ptr<T>());
    }
    return std::make_shared<const ConvLSTMWeights<T>>(D, hid, ks, wp, bp, torch_host());
  }

  std::mutex mutex_;
  std::list<CacheEntry> entries_;
};

WeightCache& weight_cache() {
  static WeightCache cache;
  return cache;
}

std::tuple<Tensor, Tensor> convlstm_float(const Tensor& x, const Tensor& h, const Tensor& c, at::TensorList weights,
                                          at::TensorList biases);

std::tuple<Tensor, Tensor> convlstm_step_cpu(const Tensor& x, const Tensor& h, const Tensor& c,
                                             at::TensorList weights, at::TensorList biases) {
  check_convlstm(x, h, c, weights, biases, kCpu);
  if (x.scalar_type() == at::kBFloat16) {  // the weight cache keys on the bf16 tensors, packs them in fp32
    auto [h_new, c_new] = convlstm_float(x.to(at::kFloat), h.to(at::kFloat), c.to(at::kFloat), weights, biases);
    return {h_new.to(at::kBFloat16), c_new.to(at::kBFloat16)};
  }
  return convlstm_float(x, h, c, weights, biases);
}

// float32 or float64 activations; the weights in the same dtype or, for bf16 activations, bf16
std::tuple<Tensor, Tensor> convlstm_float(const Tensor& x, const Tensor& h, const Tensor& c, at::TensorList weights,
                                          at::TensorList biases) {
  auto dtype = x.scalar_type();
  const int64_t D = x.size(1), hid = h.size(1);
  auto fmt = h.suggest_memory_format();
  auto h_out = at::empty(h.sizes(), h.options().memory_format(fmt));
  auto c_out = at::empty(h.sizes(), h.options().memory_format(fmt));
  if (h.numel() == 0) return {h_out, c_out};
  ConvLSTMShape shape{x.size(0), D, hid, x.size(2), x.size(3)};
  AT_DISPATCH_FLOATING_TYPES(dtype, "jsla_convlstm_step", [&] {
    auto packed = weight_cache().get<scalar_t>(weights, biases, D, hid);
    convlstm_step_forward<scalar_t>(*packed, shape, x.const_data_ptr<scalar_t>(), strides4(x),
                                    h.const_data_ptr<scalar_t>(), strides4(h), c.const_data_ptr<scalar_t>(),
                                    strides4(c), h_out.mutable_data_ptr<scalar_t>(), strides4(h_out),
                                    c_out.mutable_data_ptr<scalar_t>(), strides4(c_out), torch_host());
  });
  return {h_out, c_out};
}

// torch's pooling output size (aten/src/ATen/native/Pool.h): with ceil_mode the last window must
// start inside the input or its left padding.
int64_t pooled_size(int64_t in, int64_t k, int64_t pad, int64_t stride, bool ceil_mode) {
  const int64_t span = in + 2 * pad - k + (ceil_mode ? stride - 1 : 0);
  int64_t out = (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;  // floor division
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

Tensor max_pool2d_cpu(const Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                      bool ceil_mode) {
  TORCH_CHECK(x.dim() == 4, "jsla::max_pool2d: x must be [B,C,H,W], got ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), "jsla::max_pool2d: x is on ", x.device(), "; this runs on CPU tensors");
  auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16, "jsla::max_pool2d: x has dtype ",
              dtype, "; the CPU implementation supports float32, float64 and bfloat16");
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2,
              "jsla::max_pool2d: kernel, stride and padding take two values each (h, w)");
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK(kernel[i] > 0 && stride[i] > 0 && padding[i] >= 0 && 2 * padding[i] <= kernel[i],
                "jsla::max_pool2d: kernel ", kernel, ", stride ", stride, ", padding ", padding,
                ": kernel and stride must be positive and padding at most half the kernel");
  }
  PoolShape shape{x.size(0), x.size(1), x.size(2), x.size(3),
                  pooled_size(x.size(2), kernel[0], padding[0], stride[0], ceil_mode),
                  pooled_size(x.size(3), kernel[1], padding[1], stride[1], ceil_mode),
                  kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1]};
  // torch's rule: an output of at least 1 x 1 (windows may hang over the input's end)
  TORCH_CHECK(shape.out_height > 0 && shape.out_width > 0, "jsla::max_pool2d: input ", x.sizes(),
              " is too small for kernel ", kernel, ", stride ", stride, ", padding ", padding, " (output ",
              shape.out_height, "x", shape.out_width, ")");
  auto in = x.contiguous(at::MemoryFormat::ChannelsLast);
  auto y = at::empty({shape.batch, shape.channels, shape.out_height, shape.out_width},
                     x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (dtype == at::kBFloat16) {
    max_pool2d_nhwc<uint16_t>(shape, reinterpret_cast<const uint16_t*>(in.const_data_ptr<at::BFloat16>()),
                              reinterpret_cast<uint16_t*>(y.mutable_data_ptr<at::BFloat16>()), torch_host());
  } else {
    AT_DISPATCH_FLOATING_TYPES(dtype, "jsla_max_pool2d", [&] {
      max_pool2d_nhwc<scalar_t>(shape, in.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), torch_host());
    });
  }
  return y;
}

}  // namespace
}  // namespace jsla

TORCH_LIBRARY_IMPL(jsla, CPU, m) {
  m.impl("max_pool2d", &jsla::max_pool2d_cpu);
  m.impl("attention", &jsla::attention_cpu);
  m.impl("convlstm_step", &jsla::convlstm_step_cpu);
}
