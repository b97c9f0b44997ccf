// GGUF's K-quant blocks times int8-quantized activations on AVX-512 VNNI (the ops of
// kernels/kquant_vnni.py): q4k_mm and q6k_mm.
//
// A weight row is K / 256 blocks of 256 weights (ggml's layout, ggml-common.h):
//   Q4_K, 144 bytes: d, dmin (fp16); 12 bytes of eight 6-bit scales sc_j and mins m_j, one
//     pair per sub-block of 32; then 128 bytes of 4-bit codes. w = d sc_j q - dmin m_j, q in
//     0..15. The file orders the codes by pairs of sub-blocks (low nibbles one, high nibbles
//     the next); kquant_vnni.py moves them, within the block, to int4_vnni's order: 16 bytes
//     per sub-block, byte i holding code i in its low nibble and code i + 16 in its high one,
//     so that a 64-byte vector's low and high nibbles both give 4 lanes to each of its 4
//     sub-blocks and sum into one accumulator. Same bytes, same size.
//   Q6_K, 210 bytes, as the file stores it: ql[128], qh[64], scales[16] (int8, one per 16
//     weights), d (fp16). Per half of 128 weights (ql and qh advance by 64 and 32): the low
//     nibbles of ql's 64 bytes are the low 4 bits of weights 0..63, the high nibbles those of
//     64..127, and bits 2s, 2s + 1 of qh byte i the top two bits of weight 32 s + i.
//     w = d sc_s (q - 32), q in 0..63.
// Both decode into 64-byte vectors of unsigned codes that VPDPBUSD multiplies by the int8
// activations, x ≈ dx (a + b / 256) per group of 32 (vnni.h), as 256 a + b in one int32 sum:
// VPDPBUSD(VPDPBUSD(0, w, a) << 8, w, b). Each lane of that sum covers weights of one
// sub-block and is scaled in fp32 by its sub-block's float scale times its group's dx / 256;
// the constant parts (Q4_K's mins, Q6_K's -32) multiply per-sub-block sums of the activations
// computed once per row of x. The block bytes are read once per tile of up to 4 rows of x; every
// (weight row, x row) product is summed in the same order whatever M is.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "vnni.h"

namespace ollamapy_native {
namespace {

constexpr int64_t BLOCK = 256;  // weights per K-quant block
constexpr int64_t Q4K_BYTES = 144;
constexpr int64_t Q6K_BYTES = 210;

VNNI inline float fp16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

VNNI inline float hsum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pairs = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}

// VPDPBUSD of 6-bit codes w (u8) with a then b (s8): per lane, the exact sum of w (256 a + b)
// over its 4 bytes (|.| <= 4 * 63 * 32640 < 2^24: exact in fp32 as well)
VNNI inline __m512i two_step_dot(__m512i w, const int8_t* a, const int8_t* b) {
  const __m512i high = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(a));
  return _mm512_dpbusd_epi32(_mm512_slli_epi32(high, 8), w, _mm512_loadu_si512(b));
}

VNNI inline void store16(int8_t* p, __m512i v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtsepi32_epi8(v));
}

// sum of 256 a + b over 16 activations
VNNI inline int32_t sum16(__m512i a, __m512i b) {
  return _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(a, 8), b));
}

// ---- Q4_K -------------------------------------------------------------------------------
// Activations per chunk of 128 (groups g0..g3, 32 each), laid out to meet the codes' nibbles
// (as int4_vnni.cpp): a of the 4 groups' first 16, a of their last 16, then b likewise (4 x 64
// int8). Per block of 256, 16 floats: its 8 groups' steps dx / 256, then their sums
// dx / 256 * sum(256 a + b), which the mins multiply.

VNNI void q4k_quantize_row(const float* x, int64_t k, int8_t* acts, float* factors) {
  for (int64_t g = 0; g < k / GROUP; ++g) {
    const Int8Group q = quantize_group(x + g * GROUP);
    int8_t* a = acts + g / 4 * 256 + g % 4 * 16;
    store16(a, q.q_lo);
    store16(a + 64, q.q_hi);
    store16(a + 128, q.r_lo);
    store16(a + 192, q.r_hi);
    float* f = factors + g / 8 * 16 + g % 8;
    f[0] = q.d / 256.f;
    f[8] = q.d / 256.f * static_cast<float>(group_sum(q));
  }
}

// A block's header (d, dmin, 12 bytes of 6-bit fields) → its 8 sub-block scales d sc_j in
// lanes 0-7 and its 8 mins dmin m_j in lanes 8-15. In 32-bit words s0 | s1 | s2 after d and
// dmin: scales 0-3 are the low 6 bits of s0's bytes, mins 0-3 of s1's; scales 4-7 take their
// low 4 bits from s2's low nibbles and their top 2 from s0's top bits, mins 4-7 from s2's high
// nibbles and s1's top bits.
VNNI inline __m512 q4k_scales_and_mins(const uint8_t* block) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));  // d dmin|s0|s1|s2
  const __m128i s = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 1, 1));  // s0 s0 s1 s1
  const __m128i nibbles = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(3, 3, 3, 3)),
                                         _mm_set_epi32(4, 4, 0, 0));  // s2 s2 s2>>4 s2>>4
  const __m128i first = _mm_and_si128(s, _mm_set1_epi32(0x3F3F3F3F));
  const __m128i second = _mm_or_si128(_mm_and_si128(nibbles, _mm_set1_epi32(0x0F0F0F0F)),
                                      _mm_and_si128(_mm_srli_epi32(s, 2),
                                                    _mm_set1_epi32(0x30303030)));
  const __m128i fields = _mm_blend_epi32(first, second, 0b1010);  // sc 0-3, 4-7, m 0-3, 4-7
  const __m512 d = _mm512_permutexvar_ps(  // d in lanes 0-7, dmin in 8-15
      _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
      _mm512_castps128_ps512(_mm_cvtph_ps(v)));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(fields)), d);
}

template <int T>
VNNI void q4k_rows(const uint8_t* w, int64_t k, int64_t m0, const int8_t* acts,
                   const float* factors, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t blocks = k / BLOCK;
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  // lanes 4g..4g+3 of chunk c's sum belong to sub-block 4c + g
  const __m512i idx[2] = {
      _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
      _mm512_set_epi32(7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4)};
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w + n * blocks * Q4K_BYTES;
    __m512 acc[T][2];  // the block's two chunks: two chains of FMAs
    __m512 acc_min[T];  // lanes 8-15: the mins' products
    for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = acc_min[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = row + b * Q4K_BYTES;
      _mm_prefetch(reinterpret_cast<const char*>(block + PREFETCH), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(block + PREFETCH + 64), _MM_HINT_T0);
      const __m512 scales_and_mins = q4k_scales_and_mins(block);
      __m512i low[2], high[2];
      for (int c = 0; c < 2; ++c) {
        const __m512i codes = _mm512_loadu_si512(block + 16 + 64 * c);
        low[c] = _mm512_and_si512(codes, nibble);
        high[c] = _mm512_and_si512(_mm512_srli_epi16(codes, 4), nibble);
      }
      for (int t = 0; t < T; ++t) {
        const int64_t m = m0 + t;
        const int8_t* a = acts + m * k * 2 + b * 2 * BLOCK;
        // lanes 0-7: d sc_j dx_j / 256; 8-15: dmin m_j times group j's sum
        const __m512 s = _mm512_mul_ps(scales_and_mins,
                                       _mm512_loadu_ps(factors + m * (k / 16) + b * 16));
        for (int c = 0; c < 2; ++c) {
          const int8_t* ac = a + c * 256;
          const __m512i high_step = _mm512_dpbusd_epi32(
              _mm512_dpbusd_epi32(_mm512_setzero_si512(), low[c], _mm512_loadu_si512(ac)),
              high[c], _mm512_loadu_si512(ac + 64));
          const __m512i dot = _mm512_dpbusd_epi32(  // 256 a + b: |.| < 8 * 15 * 32640 < 2^24
              _mm512_dpbusd_epi32(_mm512_slli_epi32(high_step, 8), low[c],
                                  _mm512_loadu_si512(ac + 128)),
              high[c], _mm512_loadu_si512(ac + 192));
          acc[t][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot),
                                      _mm512_permutexvar_ps(idx[c], s), acc[t][c]);
        }
        acc_min[t] = _mm512_add_ps(acc_min[t], s);
      }
    }
    for (int t = 0; t < T; ++t) {
      y[(m0 + t) * ldy + n] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1])) -
                              hsum8(_mm512_extractf32x8_ps(acc_min[t], 1));
    }
  }
}

// ---- Q6_K -------------------------------------------------------------------------------
// Activations in order, per chunk of 64: a (64 int8) then b (64 int8). Per block of 256, 32
// floats: its 16 sub-blocks' steps (their group's dx / 256), then their offsets,
// -32 dx / 256 * sum(256 a + b), which the scales multiply.

VNNI void q6k_quantize_row(const float* x, int64_t k, int8_t* acts, float* factors) {
  for (int64_t g = 0; g < k / GROUP; ++g) {
    const Int8Group q = quantize_group(x + g * GROUP);
    int8_t* a = acts + g / 2 * 128 + (g % 2) * 32;
    store16(a, q.q_lo);
    store16(a + 16, q.q_hi);
    store16(a + 64, q.r_lo);
    store16(a + 80, q.r_hi);
    const float step = q.d / 256.f;
    float* f = factors + g / 8 * 32 + 2 * (g % 8);
    f[0] = f[1] = step;
    f[16] = -32.f * step * static_cast<float>(sum16(q.q_lo, q.r_lo));
    f[17] = -32.f * step * static_cast<float>(sum16(q.q_hi, q.r_hi));
  }
}

template <int T>
VNNI void q6k_rows(const uint8_t* w, int64_t k, int64_t m0, const int8_t* acts,
                   const float* factors, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t blocks = k / BLOCK;
  const __m512i nibble = _mm512_set1_epi8(0x0F), top = _mm512_set1_epi8(0x30);
  // qh's two bits for the first (second) 32 weights of a 64-weight vector sit at bits 0-1
  // (2-3) for the low nibbles' weights, 4-5 (6-7) for the high ones': shifted to bits 4-5
  const __m512i low_shift = _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4);  // left
  const __m512i high_shift = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);  // right
  // lanes 4s..4s+3 of chunk c's sum belong to sub-block 4c + s
  __m512i idx[4];
  for (int c = 0; c < 4; ++c) {
    idx[c] = _mm512_add_epi32(_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
                              _mm512_set1_epi32(4 * c));
  }
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w + n * blocks * Q6K_BYTES;
    __m512 acc[T][2], acc_offset[T];  // even and odd chunks: two chains of FMAs
    for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = acc_offset[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = row + b * Q6K_BYTES;
      for (int64_t line = 0; line < Q6K_BYTES; line += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(block + PREFETCH + line), _MM_HINT_T0);
      }
      const __m512 scales = _mm512_mul_ps(
          _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 192)))),
          _mm512_set1_ps(fp16_at(block + 208)));
      __m512i codes[4];
      for (int h = 0; h < 2; ++h) {
        const __m512i ql = _mm512_loadu_si512(block + 64 * h);
        const __m512i qh = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 128 + 32 * h)));
        // 0xF8: A | (B & C), the nibble (already masked) or'ed with the two top bits
        codes[2 * h] = _mm512_ternarylogic_epi32(
            _mm512_and_si512(ql, nibble), _mm512_sllv_epi64(qh, low_shift), top, 0xF8);
        codes[2 * h + 1] = _mm512_ternarylogic_epi32(
            _mm512_and_si512(_mm512_srli_epi16(ql, 4), nibble), _mm512_srlv_epi64(qh, high_shift),
            top, 0xF8);
      }
      for (int t = 0; t < T; ++t) {
        const int64_t m = m0 + t;
        const int8_t* a = acts + m * k * 2 + b * 2 * BLOCK;
        const float* f = factors + m * (k / 8) + b * 32;
        const __m512 s = _mm512_mul_ps(scales, _mm512_loadu_ps(f));
        for (int c = 0; c < 4; ++c) {
          acc[t][c % 2] = _mm512_fmadd_ps(
              _mm512_cvtepi32_ps(two_step_dot(codes[c], a + 128 * c, a + 128 * c + 64)),
              _mm512_permutexvar_ps(idx[c], s), acc[t][c % 2]);
        }
        acc_offset[t] = _mm512_fmadd_ps(scales, _mm512_loadu_ps(f + 16), acc_offset[t]);
      }
    }
    for (int t = 0; t < T; ++t) {
      y[(m0 + t) * ldy + n] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1])) +
                              _mm512_reduce_add_ps(acc_offset[t]);
    }
  }
}

// ---- the ops ------------------------------------------------------------------------------

// blocks: (N, K / 256 * block_bytes) uint8 → K
int64_t check_weight(const at::Tensor& blocks, int64_t block_bytes, const char* name) {
  TORCH_CHECK(blocks.device().is_cpu() && blocks.scalar_type() == at::kByte &&
                  blocks.dim() == 2 && blocks.size(1) % block_bytes == 0 &&
                  blocks.stride(1) == 1 && blocks.stride(0) == blocks.size(1),
              name, " blocks: contiguous (N, K / 256 * ", block_bytes, ") uint8 on the CPU");
  return blocks.size(1) / block_bytes * BLOCK;
}

// x (M, K) any float dtype → (M, N) float32. Per row of x: 2 K int8 activations and
// `floats_per_row` factors (the kernel's steps and sums or offsets).
template <typename Quantize, typename Rows4, typename Rows1>
at::Tensor kquant_mm(const at::Tensor& x, const at::Tensor& blocks, int64_t block_bytes,
                     const char* name, int64_t floats_per_block, const Quantize& quantize,
                     const Rows4& rows4, const Rows1& rows1) {
  const int64_t k = check_weight(blocks, block_bytes, name), n = blocks.size(0);
  TORCH_CHECK(cpu_has_vnni(), name, " needs AVX-512 VNNI");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k, "x must be (M, ", k, ")");
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const int64_t m_rows = xf.size(0), floats_per_row = k / BLOCK * floats_per_block;
  at::Tensor y = at::empty({m_rows, n}, xf.options());
  if (m_rows == 0 || n == 0) return y;
  std::vector<int8_t> acts(m_rows * k * 2);
  std::vector<float> factors(m_rows * floats_per_row);
  const float* xp = xf.data_ptr<float>();
  at::parallel_for(0, m_rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      quantize(xp + m * k, k, acts.data() + m * k * 2, factors.data() + m * floats_per_row);
    }
  });
  const auto* bp = blocks.data_ptr<uint8_t>();
  float* yp = y.data_ptr<float>();
  over_rows(
      n, m_rows,
      [&](int64_t m0, int64_t b0, int64_t b1) {
        rows4(bp, k, m0, acts.data(), factors.data(), yp, n, b0, b1);
      },
      [&](int64_t m0, int64_t b0, int64_t b1) {
        rows1(bp, k, m0, acts.data(), factors.data(), yp, n, b0, b1);
      });
  return y;
}

at::Tensor q4k_mm(const at::Tensor& x, const at::Tensor& blocks) {
  return kquant_mm(x, blocks, Q4K_BYTES, "q4k_mm", 16, q4k_quantize_row, q4k_rows<4>,
                   q4k_rows<1>);
}

at::Tensor q6k_mm(const at::Tensor& x, const at::Tensor& blocks) {
  return kquant_mm(x, blocks, Q6K_BYTES, "q6k_mm", 32, q6k_quantize_row, q6k_rows<4>,
                   q6k_rows<1>);
}

}  // namespace
}  // namespace ollamapy_native

TORCH_LIBRARY_IMPL(ollamapy_native, CPU, m) {
  m.impl("q4k_mm", &ollamapy_native::q4k_mm);
  m.impl("q6k_mm", &ollamapy_native::q6k_mm);
}
