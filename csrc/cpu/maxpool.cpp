// Max pooling over NHWC maps (see maxpool.h for the contract and the floor).
#include "maxpool.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define JSLA_POOL_AVX512 1
#include <immintrin.h>
#endif

namespace jsla {
namespace {

inline float widen(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline float widen(float v) { return v; }
inline double widen(double v) { return v; }

// The max over one window, channels [0, n) of each of `count` pixels at taps[t]; portable loops.
template <typename T>
void window_max(const T* const* taps, int64_t count, int64_t n, T* __restrict out) {
  std::memcpy(out, taps[0], n * sizeof(T));
  for (int64_t t = 1; t < count; ++t) {
    const T* __restrict p = taps[t];
    for (int64_t c = 0; c < n; ++c) {
      auto v = widen(p[c]), m = widen(out[c]);
      out[c] = (v > m || v != v) ? p[c] : out[c];  // torch's rule: val > max || isnan(val)
    }
  }
}

#if JSLA_POOL_AVX512
// The same with 16 channels per register, kept across the taps; bf16 widened exactly to float by a
// shift and narrowed back by one (the max is one of the inputs).
inline __m512 load16(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
inline __m512 load16(const uint16_t* p, __mmask16 k) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
}
inline void store16(float* p, __m512 v, __mmask16 k) { _mm512_mask_storeu_ps(p, k, v); }
inline void store16(uint16_t* p, __m512 v, __mmask16 k) {
  _mm256_mask_storeu_epi16(p, k, _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16)));
}

template <typename T>
void window_max_avx512(const T* const* taps, int64_t count, int64_t n, T* __restrict out) {
  for (int64_t c = 0; c < n; c += 16) {
    const __mmask16 k = n - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - c)) - 1);
    __m512 m = load16(taps[0] + c, k);
    for (int64_t t = 1; t < count; ++t) {
      const __m512 v = load16(taps[t] + c, k);
      const __mmask16 take = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
      m = _mm512_mask_mov_ps(m, take, v);
    }
    store16(out + c, m, k);
  }
}
#endif

template <typename T>
void window_max_path(const T* const* taps, int64_t count, int64_t n, T* out, bool portable) {
#if JSLA_POOL_AVX512
  if constexpr (!std::is_same_v<T, double>) {
    if (!portable) return window_max_avx512(taps, count, n, out);
  }
#endif
  window_max(taps, count, n, out);
}

}  // namespace

namespace pool_detail {
// max_pool2d_nhwc with the portable loops forced when `portable` (the unit tests run both paths)
template <typename T>
void max_pool2d_nhwc_path(const PoolShape& s, const T* x, T* y, const Host& host, bool portable) {
  const int64_t C = s.channels, rows = s.batch * s.out_height;
  if (rows == 0 || s.out_width == 0 || C == 0) return;
  // one task per output row: 56 x 64 to 7 x 832 values, enough work to amortise a chunk
  host.parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<const T*> taps(s.kernel_h * s.kernel_w);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / s.out_height, oh = r % s.out_height;
      const int64_t h0 = std::max<int64_t>(oh * s.stride_h - s.pad_h, 0);
      const int64_t h1 = std::min<int64_t>(oh * s.stride_h - s.pad_h + s.kernel_h, s.height);
      const T* image = x + n * s.height * s.width * C;
      T* out = y + r * s.out_width * C;
      for (int64_t ow = 0; ow < s.out_width; ++ow, out += C) {
        const int64_t w0 = std::max<int64_t>(ow * s.stride_w - s.pad_w, 0);
        const int64_t w1 = std::min<int64_t>(ow * s.stride_w - s.pad_w + s.kernel_w, s.width);
        int64_t count = 0;
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) taps[count++] = image + (ih * s.width + iw) * C;
        window_max_path(taps.data(), count, C, out, portable);
      }
    }
  });
}

template void max_pool2d_nhwc_path<float>(const PoolShape&, const float*, float*, const Host&, bool);
template void max_pool2d_nhwc_path<double>(const PoolShape&, const double*, double*, const Host&, bool);
template void max_pool2d_nhwc_path<uint16_t>(const PoolShape&, const uint16_t*, uint16_t*, const Host&, bool);
}  // namespace pool_detail

template <typename T>
void max_pool2d_nhwc(const PoolShape& shape, const T* x, T* y, const Host& host) {
  pool_detail::max_pool2d_nhwc_path(shape, x, y, host, false);
}

template void max_pool2d_nhwc<float>(const PoolShape&, const float*, float*, const Host&);
template void max_pool2d_nhwc<double>(const PoolShape&, const double*, double*, const Host&);
template void max_pool2d_nhwc<uint16_t>(const PoolShape&, const uint16_t*, uint16_t*, const Host&);

}  // namespace jsla
