// int8 weights (one scale per row) times int8-quantized activations on AVX-512 VNNI (the ops of
// kernels/int8_vnni.py).
//
// Weight: codes (N, K) int8 in -127..127, K padded to a multiple of CHUNK = 64 with zeros, as
// the loader made them (no copy), and scales (N,) float32: w[n, k] = q * scale[n].
// Activations are quantized per row of x and group of 32 in two int8 steps, x ≈ d (a + b / 256)
// (vnni.h). VPDPBUSD multiplies unsigned by signed bytes, so the activations go in offset to
// unsigned, a + 128 and b + 128, and the offset's share, 128 * 257 * sum(q), is taken off
// again (sum(q) by one more VPDPBUSD against ones, once per chunk of codes whatever M is). One
// row's product is then
//   scale[n] * sum over groups of d / 256 * sum(q * (256 a + b)),
// the integer sums exact in int32 and in fp32 (|.| < 2^24 per lane), scaled by d in fp32. Rows of
// the weight are split among torch's threads and taken 4 at a time against up to 4 rows of x;
// each (weight row, x row) product is summed in the same order whatever M is.

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

// One row of activations x (K floats, K padded) → per chunk, a + 128 then b + 128 (2 x 64
// uint8), x ≈ d (a + b / 256) (vnni.h); and each group's d / 256 (K / 32 floats).
VNNI void quantize_row(const float* x, int64_t k, uint8_t* acts, float* steps) {
  const __m512i offset = _mm512_set1_epi8(static_cast<char>(128));
  for (int64_t c = 0; c < k / CHUNK; ++c) {
    const Int8Group g0 = quantize_group(x + c * CHUNK);
    const Int8Group g1 = quantize_group(x + c * CHUNK + GROUP);
    const __m512i a = narrow(g0.q_lo, g0.q_hi, g1.q_lo, g1.q_hi);
    const __m512i b = narrow(g0.r_lo, g0.r_hi, g1.r_lo, g1.r_hi);
    _mm512_storeu_si512(acts + 2 * c * CHUNK, _mm512_add_epi8(a, offset));  // -128..127 → 0..255
    _mm512_storeu_si512(acts + (2 * c + 1) * CHUNK, _mm512_add_epi8(b, offset));
    steps[2 * c] = g0.d / 256.f;
    steps[2 * c + 1] = g1.d / 256.f;
  }
}

// y[m * ldy + n] for the R weight rows from n0 and the T rows of x from m0.
template <int T, int R>
VNNI void tile(const int8_t* codes, const float* scales, int64_t k, int64_t m0,
               const uint8_t* acts, const float* steps, float* y, int64_t ldy, int64_t n0) {
  const int64_t chunks = k / CHUNK;
  const __m512i zero = _mm512_setzero_si512(), c128 = _mm512_set1_epi8(static_cast<char>(128));
  // lanes 0-7 sum the chunk's first group, lanes 8-15 its second
  const __m512i spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  for (int64_t c = 0; c < chunks; ++c) {
    __m512i w[R], offset[R];  // codes, and -128 * their sums (per 4 codes)
    for (int r = 0; r < R; ++r) {
      const int8_t* row = codes + (n0 + r) * k + c * CHUNK;
      _mm_prefetch(reinterpret_cast<const char*>(row + PREFETCH), _MM_HINT_T0);
      w[r] = _mm512_loadu_si512(row);
      offset[r] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, c128, w[r]));
    }
    for (int t = 0; t < T; ++t) {
      const int64_t m = m0 + t;
      const uint8_t* a = acts + (m * chunks + c) * 2 * CHUNK;
      const __m512i ua = _mm512_loadu_si512(a), ub = _mm512_loadu_si512(a + CHUNK);
      const __m512 d = _mm512_permutexvar_ps(
          spread, _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(
                      reinterpret_cast<const __m128i*>(steps + m * (k / GROUP) + 2 * c)))));
      for (int r = 0; r < R; ++r) {
        // 256 ((a + 128) q - 128 q) + (b + 128) q - 128 q = (256 a + b) q
        const __m512i hi = _mm512_dpbusd_epi32(offset[r], ua, w[r]);
        const __m512i dot = _mm512_add_epi32(_mm512_slli_epi32(hi, 8),
                                             _mm512_dpbusd_epi32(offset[r], ub, w[r]));
        acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), d, acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      y[(m0 + t) * ldy + n0 + r] = _mm512_reduce_add_ps(acc[r][t]) * scales[n0 + r];
    }
  }
}

// rows [n0, n1) of the weight against the T rows of x from m0: 4 weight rows at a time when
// several rows of x share them (one row of x: one weight row at a time, a single stream the
// prefetcher follows; 4 streams made the 262144 x 640 head 1.8x slower)
template <int T>
void rows(const int8_t* codes, const float* scales, int64_t k, int64_t m0, const uint8_t* acts,
          const float* steps, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; T > 1 && n + 4 <= n1; n += 4) tile<T, 4>(codes, scales, k, m0, acts, steps, y, ldy, n);
  for (; n < n1; ++n) tile<T, 1>(codes, scales, k, m0, acts, steps, y, ldy, n);
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
  std::vector<uint8_t> acts(m_rows * k * 2);
  std::vector<float> steps(m_rows * k / GROUP);
  const float* xp = xf.data_ptr<float>();
  for (int64_t m = 0; m < m_rows; ++m) {
    quantize_row(xp + m * k, k, acts.data() + m * k * 2, steps.data() + m * k / GROUP);
  }
  const auto* cp = codes.data_ptr<int8_t>();
  const float* sp = scales.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  over_rows(
      n, m_rows,
      [&](int64_t m0, int64_t b0, int64_t b1) {
        rows<4>(cp, sp, k, m0, acts.data(), steps.data(), yp, n, b0, b1);
      },
      [&](int64_t m0, int64_t b0, int64_t b1) {
        rows<1>(cp, sp, k, m0, acts.data(), steps.data(), yp, n, b0, b1);
      });
  return y;
}

}  // namespace
}  // namespace ollamapy_native

TORCH_LIBRARY_IMPL(ollamapy_native, CPU, m) {
  m.impl("int8_mm", &ollamapy_native::int8_mm);
}
