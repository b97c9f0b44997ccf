// What the VNNI kernels share: the target attribute, the CPU check, bf16 scalars, and the int8
// rounding of a group of 32 activations.
#pragma once

#include <cstdint>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#if !defined(__x86_64__)
#error "x86-64 only: kernels/native.py builds this library on x86-64 alone"
#endif
#include <immintrin.h>

// The kernels' functions are compiled for AVX-512 VNNI; the rest of the library for the
// baseline, so it loads anywhere and `has_vnni` can say no.
#define VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")))

namespace ollamapy_native {

constexpr int64_t GROUP = 32;  // activations share one int8 scale per 32
constexpr int64_t PREFETCH = 2048;  // bytes ahead of a weight read; 1 KB and 4 KB were slower
constexpr int64_t BLOCK_ROWS = 16;  // weight rows per pass over the rows of x

inline bool cpu_has_vnni() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// 32 activations in two int8 steps: x ≈ d * (q + r / 256), d = max|x| / 127. q = round(x / d)
// (nearest, ties to even), r = round((x / d - q) * 256) in -128..128, saturated to 127: each x
// is kept within d / 256 (~4e-5 of the group's largest), where one int8 step alone keeps d / 2.
// The kernels take q * 256 + r as one exact integer sum (int32 lanes, exact in fp32 too).
struct Int8Group {
  __m512i q_lo, q_hi, r_lo, r_hi;  // (16 int32 each): the first and second 16 activations
  float d;
};

VNNI inline Int8Group quantize_group(const float* x) {
  const __m512 a = _mm512_loadu_ps(x);
  const __m512 b = _mm512_loadu_ps(x + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
  const float d = amax / 127.f;
  const __m512 inv = _mm512_set1_ps(d > 0.f ? 1.f / d : 0.f);
  const __m512 sa = _mm512_mul_ps(a, inv), sb = _mm512_mul_ps(b, inv);
  const __m512i qa = _mm512_cvtps_epi32(sa), qb = _mm512_cvtps_epi32(sb);
  const __m512 scale = _mm512_set1_ps(256.f);
  const __m512i ra = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(
      _mm512_sub_ps(sa, _mm512_cvtepi32_ps(qa)), scale)), _mm512_set1_epi32(127));
  const __m512i rb = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(
      _mm512_sub_ps(sb, _mm512_cvtepi32_ps(qb)), scale)), _mm512_set1_epi32(127));
  return {qa, qb, ra, rb, d};
}

// sum of q * 256 + r over the group
VNNI inline int32_t group_sum(const Int8Group& g) {
  return _mm512_reduce_add_epi32(_mm512_add_epi32(
      _mm512_slli_epi32(_mm512_add_epi32(g.q_lo, g.q_hi), 8), _mm512_add_epi32(g.r_lo, g.r_hi)));
}

// Every (weight row, row of x) product, weight rows split among torch's threads in blocks of
// BLOCK_ROWS that stay in cache while every row of x passes over them: tile4(m0, n0, n1) for
// rows m0..m0+3 of x, tile1(m0, n0, n1) for the rest.
template <typename Tile4, typename Tile1>
void over_rows(int64_t n, int64_t m_rows, const Tile4& tile4, const Tile1& tile1) {
  at::parallel_for(0, n, BLOCK_ROWS, [&](int64_t n0, int64_t n1) {
    for (int64_t b0 = n0; b0 < n1; b0 += BLOCK_ROWS) {
      const int64_t b1 = std::min(b0 + BLOCK_ROWS, n1);
      int64_t m0 = 0;
      for (; m0 + 4 <= m_rows; m0 += 4) tile4(m0, b0, b1);
      for (; m0 < m_rows; ++m0) tile1(m0, b0, b1);
    }
  });
}

}  // namespace ollamapy_native
