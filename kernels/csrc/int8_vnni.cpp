// int8 weights (one scale per row) times int8-quantized activations on AVX-512 VNNI (the ops of
// kernels/int8_vnni.py).
//
// Weight: codes (N, K) int8 in -127..127, K padded to a multiple of CHUNK = 64 with zeros, as
// the loader made them (no copy), and scales (N,) float32: w[n, k] = q * scale[n].
// Activations are quantized per row of x and group of 32 in two int8 steps, x ≈ d (a + b / 256)
// (vnni.h). VPDPBUSD multiplies unsigned by signed bytes, so the activations go in as |a|, |b|
// and their signs move onto the weight (a masked negation, safe since no code is -128). One
// row's product is then
//   scale[n] * sum over groups of d / 256 * sum(q * (256 a + b)),
// the integer sums exact in int32 and in fp32 (|.| < 2^24 per lane), scaled by d in fp32. Rows of
// the weight are split among torch's threads; each is summed in the same order whatever M is.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "vnni.h"

namespace ollamapy_native {
namespace {

constexpr int64_t CHUNK = 64;  // 2 groups: one 512-bit load of codes

// 4 x 16 int32 in -128..127 → 64 int8, in order
VNNI inline __m512i narrow(__m512i a0, __m512i a1, __m512i b0, __m512i b1) {
  return _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_set_m128i(_mm512_cvtsepi32_epi8(a1),
                                              _mm512_cvtsepi32_epi8(a0))),
      _mm256_set_m128i(_mm512_cvtsepi32_epi8(b1), _mm512_cvtsepi32_epi8(b0)), 1);
}

// One row of activations x (K floats, K padded) → per chunk, |a| then |b| (2 x 64 uint8) and
// the sign bits of a and of b (2 x 64-bit masks), x ≈ d (a + b / 256) (vnni.h); and each
// group's d / 256 (K / 32 floats).
VNNI void quantize_row(const float* x, int64_t k, uint8_t* mags, uint64_t* signs, float* steps) {
  for (int64_t c = 0; c < k / CHUNK; ++c) {
    const Int8Group g0 = quantize_group(x + c * CHUNK);
    const Int8Group g1 = quantize_group(x + c * CHUNK + GROUP);
    const __m512i a = narrow(g0.q_lo, g0.q_hi, g1.q_lo, g1.q_hi);
    const __m512i b = narrow(g0.r_lo, g0.r_hi, g1.r_lo, g1.r_hi);
    _mm512_storeu_si512(mags + 2 * c * CHUNK, _mm512_abs_epi8(a));  // |-128| reads as 128
    _mm512_storeu_si512(mags + (2 * c + 1) * CHUNK, _mm512_abs_epi8(b));
    signs[2 * c] = _mm512_movepi8_mask(a);
    signs[2 * c + 1] = _mm512_movepi8_mask(b);
    steps[2 * c] = g0.d / 256.f;
    steps[2 * c + 1] = g1.d / 256.f;
  }
}

// y[m * ldy + n] for rows [n0, n1) of the weight and rows [m0, m0 + T) of the activations.
template <int T>
VNNI void rows_vnni(const int8_t* codes, const float* scales, int64_t k, int64_t m0,
                    const uint8_t* mags, const uint64_t* signs, const float* steps, float* y,
                    int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t chunks = k / CHUNK;
  const __m512i zero = _mm512_setzero_si512();
  // lanes 0-7 sum the chunk's first group, lanes 8-15 its second
  const __m512i spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* row = codes + n * k;
    __m512 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) {
      _mm_prefetch(reinterpret_cast<const char*>(row + c * CHUNK + PREFETCH), _MM_HINT_T0);
      const __m512i w = _mm512_loadu_si512(row + c * CHUNK);
      for (int t = 0; t < T; ++t) {
        const int64_t m = m0 + t;
        const uint8_t* mag = mags + (m * chunks + c) * 2 * CHUNK;
        const uint64_t* sign = signs + (m * chunks + c) * 2;
        // w times a and w times b: the activations' signs moved onto w (no code is -128)
        const __m512i wa = _mm512_mask_sub_epi8(w, sign[0], zero, w);
        const __m512i wb = _mm512_mask_sub_epi8(w, sign[1], zero, w);
        const __m512i a = _mm512_dpbusd_epi32(zero, _mm512_loadu_si512(mag), wa);
        const __m512i b = _mm512_dpbusd_epi32(zero, _mm512_loadu_si512(mag + CHUNK), wb);
        const __m512i dot = _mm512_add_epi32(_mm512_slli_epi32(a, 8), b);  // a * 256 + b
        const __m512 d = _mm512_permutexvar_ps(
            spread, _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(
                        reinterpret_cast<const __m128i*>(steps + m * (k / GROUP) + 2 * c)))));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), d, acc[t]);
      }
    }
    for (int t = 0; t < T; ++t) y[(m0 + t) * ldy + n] = _mm512_reduce_add_ps(acc[t]) * scales[n];
  }
}

// → K
int64_t check_weight(const at::Tensor& codes, const at::Tensor& scales) {
  TORCH_CHECK(codes.device().is_cpu() && codes.scalar_type() == at::kChar && codes.dim() == 2 &&
                  codes.is_contiguous() && codes.size(1) % CHUNK == 0,
              "codes: contiguous (N, K) int8 on the CPU, K a multiple of ", CHUNK);
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() &&
                  scales.dim() == 1 && scales.size(0) == codes.size(0),
              "scales: contiguous (N,) float32");
  return codes.size(1);
}

// x (M, K) any float dtype → (M, N) float32
at::Tensor int8_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales) {
  const int64_t k = check_weight(codes, scales), n = codes.size(0);
  TORCH_CHECK(cpu_has_vnni(), "int8_mm needs AVX-512 VNNI");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k, "x must be (M, ", k, ")");
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const int64_t m_rows = xf.size(0);
  at::Tensor y = at::empty({m_rows, n}, xf.options());
  if (m_rows == 0 || n == 0) return y;
  std::vector<uint8_t> mags(m_rows * k * 2);
  std::vector<uint64_t> signs(m_rows * k / CHUNK * 2);
  std::vector<float> steps(m_rows * k / GROUP);
  const float* xp = xf.data_ptr<float>();
  for (int64_t m = 0; m < m_rows; ++m) {
    quantize_row(xp + m * k, k, mags.data() + m * k * 2, signs.data() + m * k / CHUNK * 2,
                 steps.data() + m * k / GROUP);
  }
  const auto* cp = codes.data_ptr<int8_t>();
  const float* sp = scales.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  over_rows(
      n, m_rows,
      [&](int64_t m0, int64_t b0, int64_t b1) {
        rows_vnni<4>(cp, sp, k, m0, mags.data(), signs.data(), steps.data(), yp, n, b0, b1);
      },
      [&](int64_t m0, int64_t b0, int64_t b1) {
        rows_vnni<1>(cp, sp, k, m0, mags.data(), signs.data(), steps.data(), yp, n, b0, b1);
      });
  return y;
}

}  // namespace
}  // namespace ollamapy_native

TORCH_LIBRARY_IMPL(ollamapy_native, CPU, m) {
  m.impl("int8_mm", &ollamapy_native::int8_mm);
}
