// int4 weights times int8-quantized activations on AVX-512 VNNI (the ops of kernels/int4_vnni.py).
//
// Weight layout: blocks (N, 20 * K / 32) uint8, each row one stream of records, one per chunk of
// 4 groups of 32 (CHUNK = 128 weights), the last holding the 1-3 groups left when K is not a
// multiple of 128 (no padding: 20 bytes per group):
//   16 bytes of codes per group: byte j holds code j in its low nibble and code j + 16 in its
//      high nibble, so one AND and one shift split 4 groups into two 64-byte vectors of codes;
//   then the groups' bf16 scales, then their bf16 zeros: w = (q - 8) * scale + zero, as
//      kernels/rows.py.
// Activations are quantized per row of x and group of 32 in two int8 steps, x ≈ d (a + b / 256)
// (vnni.h), laid out to meet the two code vectors. One group's product is then
//   scale * d / 256 * sum(q * (256 a + b)) + (zero - 8 * scale) * sum(x as quantized),
// the first sum by VPDPBUSD (u8 codes times s8 activations, 4 products per int32 lane, twice),
// the second once per call. Rows of the weight are split among torch's threads (OpenMP); each is
// summed in the same order whatever M is, so a sequence's output does not depend on its batch.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "vnni.h"

namespace ollamapy_native {
namespace {

constexpr int64_t CHUNK = 128;  // 4 groups: 64 bytes of codes, one 512-bit load
constexpr int64_t GROUP_BYTES = 20;  // a group as stored: 16 bytes of codes, a scale, a zero

constexpr int64_t ACTS = 256;  // a chunk's activations: q of the 4 first halves, of the 4
                               // second halves, then r likewise (64 int8 each)

// One row of activations x (K floats) → acts (ceil(K / 128) chunks of ACTS int8, laid out to
// meet the codes; zero where a last chunk has fewer groups) and dsums (8 floats per chunk:
// its groups' d / 256, then each group's d * sum(q + r / 256), which its zero term multiplies).
VNNI void quantize_row(const float* x, int64_t k, int8_t* acts, float* dsums) {
  for (int64_t g = 0; g < k / GROUP; ++g) {
    const Int8Group q = quantize_group(x + g * GROUP);
    const int64_t chunk = g / 4, slot = g % 4;
    int8_t* a = acts + chunk * ACTS + slot * 16;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a), _mm512_cvtsepi32_epi8(q.q_lo));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a + 64), _mm512_cvtsepi32_epi8(q.q_hi));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a + 128), _mm512_cvtsepi32_epi8(q.r_lo));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a + 192), _mm512_cvtsepi32_epi8(q.r_hi));
    dsums[chunk * 8 + slot] = q.d / 256.f;
    dsums[chunk * 8 + 4 + slot] = q.d / 256.f * static_cast<float>(group_sum(q));
  }
}

VNNI inline float hsum4(__m128 v) {
  const __m128 pairs = _mm_add_ps(v, _mm_movehl_ps(v, v));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}

// up to 4 bf16 at p (those in `present`) → fp32, 0 elsewhere
VNNI inline __m128 bf16x4(const uint8_t* p, __mmask8 present) {
  const __m128i h = _mm_maskz_loadu_epi16(present, p);
  return _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(h), 16));
}

// One chunk of `groups` groups (4, or fewer in a row's last record) times T rows of x: the
// codes split once, then per row of x both int8 steps' products, scaled, into acc / acc_zero.
template <int T>
VNNI inline void chunk_products(const uint8_t* record, int64_t groups, const int8_t* act,
                                int64_t act_stride, const float* ds, int64_t ds_stride,
                                __m512* acc, __m128* acc_zero) {
  const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
  // lane l of a 4-group chunk belongs to group l / 4
  const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  const __mmask64 code_bytes = groups == 4 ? ~0ULL : (1ULL << (16 * groups)) - 1;
  const __mmask8 present = static_cast<__mmask8>((1 << groups) - 1);
  const __m512i codes = _mm512_maskz_loadu_epi8(code_bytes, record);
  const __m512i lo = _mm512_and_si512(codes, low_nibbles);
  const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(codes, 4), low_nibbles);
  // the groups' scales and zeros (0 for absent groups); the zero term's factor
  const __m128 s4 = bf16x4(record + 16 * groups, present);
  const __m128 bias4 = _mm_fnmadd_ps(_mm_set1_ps(8.f), s4, bf16x4(record + 18 * groups, present));
  const __m512i zero = _mm512_setzero_si512();
  for (int t = 0; t < T; ++t) {
    const int8_t* a = act + t * act_stride;
    const __m512i q = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo, _mm512_loadu_si512(a)),
                                          hi, _mm512_loadu_si512(a + 64));
    const __m512i r = _mm512_dpbusd_epi32(
        _mm512_dpbusd_epi32(zero, lo, _mm512_loadu_si512(a + 128)), hi,
        _mm512_loadu_si512(a + 192));
    const __m512i dot = _mm512_add_epi32(_mm512_slli_epi32(q, 8), r);  // q * 256 + r
    const float* d = ds + t * ds_stride;  // 4 steps d / 256, 4 sums
    const __m512 scale = _mm512_permutexvar_ps(
        spread, _mm512_castps128_ps512(_mm_mul_ps(s4, _mm_loadu_ps(d))));
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[t]);
    acc_zero[t] = _mm_fmadd_ps(bias4, _mm_loadu_ps(d + 4), acc_zero[t]);
  }
}

// y[m * ldy + n] for rows [n0, n1) of the weight and rows [m0, m0 + T) of the activations.
template <int T>
VNNI void rows_vnni(const uint8_t* blocks, int64_t k, int64_t m0, const int8_t* acts,
                    const float* dsums, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t groups = k / GROUP, full = groups / 4, tail = groups % 4;
  const int64_t chunks = full + (tail > 0), row_bytes = groups * GROUP_BYTES;
  const int8_t* act = acts + m0 * chunks * ACTS;
  const float* dsum = dsums + m0 * chunks * 8;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = blocks + n * row_bytes;
    __m512 acc[T];
    __m128 acc_zero[T];
    for (int t = 0; t < T; ++t) {
      acc[t] = _mm512_setzero_ps();
      acc_zero[t] = _mm_setzero_ps();
    }
    for (int64_t c = 0; c < chunks; ++c) {
      const uint8_t* record = row + c * 4 * GROUP_BYTES;
      _mm_prefetch(reinterpret_cast<const char*>(record + PREFETCH), _MM_HINT_T0);
      chunk_products<T>(record, c < full ? 4 : tail, act + c * ACTS, chunks * ACTS,
                        dsum + c * 8, chunks * 8, acc, acc_zero);
    }
    for (int t = 0; t < T; ++t) {
      y[(m0 + t) * ldy + n] = _mm512_reduce_add_ps(acc[t]) + hsum4(acc_zero[t]);
    }
  }
}

// blocks: (N, 20 K / 32) uint8 → K
int64_t check_weight(const at::Tensor& blocks) {
  TORCH_CHECK(blocks.device().is_cpu() && blocks.scalar_type() == at::kByte &&
                  blocks.dim() == 2 && blocks.size(1) % GROUP_BYTES == 0 &&
                  blocks.is_contiguous(),
              "blocks: contiguous (N, ", GROUP_BYTES, " K / ", GROUP, ") uint8 on the CPU");
  return blocks.size(1) / GROUP_BYTES * GROUP;
}

// x (M, K) any float dtype → (M, N) float32
at::Tensor int4_mm(const at::Tensor& x, const at::Tensor& blocks) {
  const int64_t k = check_weight(blocks), n = blocks.size(0);
  TORCH_CHECK(cpu_has_vnni(), "int4_mm needs AVX-512 VNNI");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k, "x must be (M, ", k, ")");
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const int64_t m_rows = xf.size(0);
  at::Tensor y = at::empty({m_rows, n}, xf.options());
  if (m_rows == 0 || n == 0) return y;
  const int64_t chunks = (k + CHUNK - 1) / CHUNK;
  std::vector<int8_t> acts(m_rows * chunks * ACTS);  // zeroed: a short last chunk stays so
  std::vector<float> dsums(m_rows * chunks * 8);
  const float* xp = xf.data_ptr<float>();
  for (int64_t m = 0; m < m_rows; ++m) {
    quantize_row(xp + m * k, k, acts.data() + m * chunks * ACTS, dsums.data() + m * chunks * 8);
  }
  const auto* bp = blocks.data_ptr<uint8_t>();
  float* yp = y.data_ptr<float>();
  over_rows(
      n, m_rows,
      [&](int64_t m0, int64_t b0, int64_t b1) {
        rows_vnni<4>(bp, k, m0, acts.data(), dsums.data(), yp, n, b0, b1);
      },
      [&](int64_t m0, int64_t b0, int64_t b1) {
        rows_vnni<1>(bp, k, m0, acts.data(), dsums.data(), yp, n, b0, b1);
      });
  return y;
}

}  // namespace
}  // namespace ollamapy_native

TORCH_LIBRARY_IMPL(ollamapy_native, CPU, m) {
  m.impl("int4_mm", &ollamapy_native::int4_mm);
}
