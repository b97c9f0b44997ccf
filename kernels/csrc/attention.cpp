// Attention over the KV cache, one query at a time, on AVX-512: the op `span_attention` of
// kernels/attention.py.
//
// q (B, H, T, D) float32; k and v (B, Hkv, S, D) float32, bfloat16 or float16, views of the
// cache (any strides but a contiguous last dimension); mask (B or 1, 1, T, S) bool, True where
// the query may see the key; each kv head serves G = H / Hkv query heads; D a multiple of 16.
// → (B, H, T, D) float32, softmax(cap(q k^T * scale), masked, with an optional sink logit per
// head in the denominator) v.
//
// Every query (b, t) is handled alone. The keys are cut into spans of SPAN positions. Each
// (query, kv head, span) is one task: it reads the span's keys and values once for its G query
// heads and keeps, per query head, the span's largest score m over the keys the query sees,
// l = sum exp(s - m) and a = sum exp(s - m) v (flash-decoding's split of the keys). The spans
// are then merged in order: out = sum a e^(m - M) / sum l e^(m - M). Spans start at position
// 0 whatever S is, a span the mask hides entirely is not read, and a hidden key adds exactly
// 0: a query's result depends on the keys it sees alone, never on B, T, S, the other queries
// or the thread count. So a token gets the same attention in a decode step of any batch as in
// a prompt chunk of any length (batch invariance: the model's other ops are per-row already).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <optional>

#include "vnni.h"

namespace ollamapy_native {
namespace {

constexpr int64_t SPAN = 64;      // key positions per task
constexpr int64_t LANES = 16;     // floats per 512-bit register
constexpr int64_t HEADS_AT_ONCE = 8;  // query heads whose sums stay in registers together
constexpr int64_t AHEAD = 4;  // keys prefetched ahead of the one scored (its value: to L2)
constexpr int64_t MERGE_GRAIN = 1 << 16;  // floats merged per thread, at least
constexpr int64_t MAX_GROUP = 64;  // query heads per kv head (a scores buffer on the stack)
constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

// 16 elements of a cache row → 16 floats
VNNI inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
VNNI inline __m512 load16(const c10::BFloat16* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
VNNI inline __m512 load16(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// e^x for x <= 0, within ~2 ulp; below -150 exactly 0 (a masked score, -inf, included).
// x = n ln 2 + r with |r| <= ln 2 / 2, e^r by its Taylor series to r^7 (error < 6e-9), then
// scaled by 2^n.
VNNI inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-150.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln 2 in two parts
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040);
  for (const float c : {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) {
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  }
  return _mm512_scalef_ps(p, n);
}

struct Shapes {
  int64_t B, T, H, Hkv, G, S, D, spans;
};

// Raw pointers and element strides of the inputs.
template <typename T>
struct Inputs {
  const float* q;
  int64_t q_b, q_t, q_h;
  const T* k;
  int64_t k_b, k_h, k_s;
  const T* v;
  int64_t v_b, v_h, v_s;
  const bool* mask;
  int64_t m_b, m_t, m_s;
  float scale, cap;
};

// scores[g * SPAN + j - s0] = q_g . k_j for NG query heads from g0, keys [s0, s1): each key
// read once for the NG heads, one horizontal sum per (key, head). Given v (the first run of
// heads), it also prefetches: keys AHEAD positions on to L1, each scored key's value to L2.
template <int NG, typename T>
VNNI void score(const float* q, int64_t q_h, const T* k, int64_t k_s, int64_t s0,
                int64_t s1, int64_t d, int64_t g0, float* scores, const T* v, int64_t v_s) {
  const int64_t row_bytes = d * sizeof(T);
  for (int64_t j = s0; j < s1; ++j) {
    const T* kj = k + j * k_s;
    if (v != nullptr) {
      const char* kn = reinterpret_cast<const char*>(kj + AHEAD * k_s);
      const char* vj = reinterpret_cast<const char*>(v + j * v_s);
      for (int64_t b = 0; b < row_bytes; b += 64) {
        if (j + AHEAD < s1) _mm_prefetch(kn + b, _MM_HINT_T0);
        _mm_prefetch(vj + b, _MM_HINT_T1);
      }
    }
    __m512 acc[NG];
    for (int g = 0; g < NG; ++g) acc[g] = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; c += LANES) {
      const __m512 kc = load16(kj + c);
      for (int g = 0; g < NG; ++g) {
        acc[g] = _mm512_fmadd_ps(_mm512_loadu_ps(q + (g0 + g) * q_h + c), kc, acc[g]);
      }
    }
    for (int g = 0; g < NG; ++g) scores[(g0 + g) * SPAN + (j - s0)] = _mm512_reduce_add_ps(acc[g]);
  }
}

// out_g += sum_j p[g * SPAN + j] v_j for NG query heads from g0; out_g at out + g * stride
template <int NG, typename T>
VNNI void weigh(const float* p, const T* v, int64_t v_s, int64_t s0, int64_t s1, int64_t d,
                int64_t g0, float* out, int64_t stride) {
  for (int64_t c = 0; c < d; c += LANES) {
    __m512 acc[NG];
    for (int g = 0; g < NG; ++g) acc[g] = _mm512_setzero_ps();
    for (int64_t j = s0; j < s1; ++j) {
      const __m512 vc = load16(v + j * v_s + c);
      for (int g = 0; g < NG; ++g) {
        acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(p[(g0 + g) * SPAN + (j - s0)]), vc, acc[g]);
      }
    }
    for (int g = 0; g < NG; ++g) _mm512_storeu_ps(out + (g0 + g) * stride + c, acc[g]);
  }
}

// Call f.template operator()<NG>(g0) over the query heads [0, G) in runs of at most 8.
template <typename F>
void by_heads(int64_t G, const F& f) {
  for (int64_t g0 = 0; g0 < G; g0 += HEADS_AT_ONCE) {
    switch (std::min(HEADS_AT_ONCE, G - g0)) {
      case 1: f.template operator()<1>(g0); break;
      case 2: f.template operator()<2>(g0); break;
      case 3: f.template operator()<3>(g0); break;
      case 4: f.template operator()<4>(g0); break;
      case 5: f.template operator()<5>(g0); break;
      case 6: f.template operator()<6>(g0); break;
      case 7: f.template operator()<7>(g0); break;
      default: f.template operator()<8>(g0); break;
    }
  }
}

// One task: query t of row b, kv head kh, span s → for each of its G query heads one record
// of part[(h * spans + s) * (D + 2)] (part: the query's records): m, l, then a (D floats).
template <typename T>
VNNI void span_task(const Inputs<T>& in, const Shapes& sh, int64_t b, int64_t t, int64_t kh,
                    int64_t s, float* part) {
  const int64_t s0 = s * SPAN, s1 = std::min(sh.S, s0 + SPAN), n = s1 - s0;
  const int64_t record = sh.D + 2, stride = sh.spans * record;  // between query heads
  float* first = part + (kh * sh.G * sh.spans + s) * record;
  const bool* seen = in.mask + b * in.m_b + t * in.m_t;
  __mmask16 live[SPAN / LANES];  // in the span and seen by the row, 16 keys at a time
  bool any = false;
  for (int64_t j = 0; j < n; j += LANES) {
    __mmask16 m = 0;
    for (int64_t i = 0; i < std::min(LANES, n - j); ++i) m |= seen[(s0 + j + i) * in.m_s] << i;
    live[j / LANES] = m;
    any |= m != 0;
  }
  if (!any) {  // nothing to see here: an empty record
    for (int64_t g = 0; g < sh.G; ++g) {
      first[g * stride] = NEG_INF;
      first[g * stride + 1] = 0.f;
    }
    return;
  }
  const float* q = in.q + b * in.q_b + t * in.q_t + kh * sh.G * in.q_h;
  const T* k = in.k + b * in.k_b + kh * in.k_h;
  const T* v = in.v + b * in.v_b + kh * in.v_h;
  alignas(64) float scores[MAX_GROUP * SPAN];
  by_heads(sh.G, [&]<int NG>(int64_t g0) {
    score<NG>(q, in.q_h, k, in.k_s, s0, s1, sh.D, g0, scores, g0 == 0 ? v : nullptr,
              in.v_s);
  });
  const __m512 scale = _mm512_set1_ps(in.scale), neg_inf = _mm512_set1_ps(NEG_INF);
  for (int64_t g = 0; g < sh.G; ++g) {
    float* sg = scores + g * SPAN;
    __m512 top = neg_inf;
    for (int64_t j = 0; j < n; j += LANES) {
      __m512 x = _mm512_mul_ps(_mm512_loadu_ps(sg + j), scale);
      if (in.cap != 0.f) {  // gemma2's soft cap, tanh(x / cap) * cap
        alignas(64) float t[LANES];
        _mm512_store_ps(t, x);
        for (float& e : t) e = std::tanh(e / in.cap) * in.cap;
        x = _mm512_load_ps(t);
      }
      x = _mm512_mask_mov_ps(neg_inf, live[j / LANES], x);
      _mm512_storeu_ps(sg + j, x);
      top = _mm512_max_ps(top, x);
    }
    const float m = _mm512_reduce_max_ps(top);
    const __m512 mv = _mm512_set1_ps(m);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += LANES) {  // unseen keys: e^-inf = 0
      const __m512 e = _mm512_maskz_mov_ps(live[j / LANES],
                                           exp16(_mm512_sub_ps(_mm512_loadu_ps(sg + j), mv)));
      _mm512_storeu_ps(sg + j, e);
      sum = _mm512_add_ps(sum, e);
    }
    first[g * stride] = m;
    first[g * stride + 1] = _mm512_reduce_add_ps(sum);
  }
  by_heads(sh.G, [&]<int NG>(int64_t g0) {
    weigh<NG>(scores, v, in.v_s, s0, s1, sh.D, g0, first + 2, stride);
  });
}

// Merge the spans of one query's head h into out (D floats).
void merge(const float* part, const Shapes& sh, const float* sinks, int64_t h, float* out) {
  const int64_t record = sh.D + 2;
  float top = sinks != nullptr ? sinks[h] : NEG_INF;
  for (int64_t s = 0; s < sh.spans; ++s) top = std::max(top, part[s * record]);
  std::fill(out, out + sh.D, 0.f);
  if (top == NEG_INF) return;  // the row sees nothing (never for a real row: it sees itself)
  float total = sinks != nullptr ? std::exp(sinks[h] - top) : 0.f;
  for (int64_t s = 0; s < sh.spans; ++s) {
    const float* r = part + s * record;
    if (r[0] == NEG_INF) continue;
    const float w = std::exp(r[0] - top);
    total += r[1] * w;
    for (int64_t d = 0; d < sh.D; ++d) out[d] += r[2 + d] * w;
  }
  for (int64_t d = 0; d < sh.D; ++d) out[d] /= total;
}

// Queries are taken in groups whose span records fit in about this many floats, so that a
// long prompt chunk over a long cache does not hold them all at once.
constexpr int64_t RECORDS = 1 << 22;

template <typename T>
at::Tensor run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
               const at::Tensor& mask, double scale, double cap,
               const std::optional<at::Tensor>& sinks) {
  const Shapes sh{q.size(0), q.size(2), q.size(1), k.size(1), q.size(1) / k.size(1), k.size(2),
                  q.size(3), (k.size(2) + SPAN - 1) / SPAN};
  const Inputs<T> in{q.data_ptr<float>(), q.stride(0), q.stride(2), q.stride(1),
                     k.const_data_ptr<T>(), k.stride(0), k.stride(1), k.stride(2),
                     v.const_data_ptr<T>(), v.stride(0), v.stride(1), v.stride(2),
                     mask.const_data_ptr<bool>(), mask.size(0) == 1 ? 0 : mask.stride(0),
                     mask.stride(2), mask.stride(3), static_cast<float>(scale),
                     static_cast<float>(cap)};
  const int64_t record = sh.D + 2, per_query = sh.H * sh.spans * record;
  const int64_t queries = sh.B * sh.T;
  const int64_t group = std::clamp<int64_t>(RECORDS / per_query, 1, queries);
  at::Tensor part = at::empty({group, per_query}, q.options());
  float* parts = part.data_ptr<float>();
  at::Tensor out = at::empty({sh.B, sh.H, sh.T, sh.D}, q.options());
  const float* sink = sinks.has_value() ? sinks->data_ptr<float>() : nullptr;
  float* o = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, MERGE_GRAIN / (sh.spans * sh.D));
  for (int64_t r0 = 0; r0 < queries; r0 += group) {  // query r is (b, t) = (r / T, r % T)
    const int64_t r1 = std::min(queries, r0 + group);
    at::parallel_for(0, (r1 - r0) * sh.Hkv * sh.spans, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t r = r0 + task / (sh.Hkv * sh.spans);
        span_task(in, sh, r / sh.T, r % sh.T, task / sh.spans % sh.Hkv, task % sh.spans,
                  parts + (r - r0) * per_query);
      }
    });
    at::parallel_for(0, (r1 - r0) * sh.H, grain, [&](int64_t h0, int64_t h1) {
      for (int64_t i = h0; i < h1; ++i) {
        const int64_t r = r0 + i / sh.H, h = i % sh.H;
        merge(parts + (r - r0) * per_query + h * sh.spans * record, sh, sink, h,
              o + ((r / sh.T * sh.H + h) * sh.T + r % sh.T) * sh.D);
      }
    });
  }
  return out;
}

at::Tensor span_attention(const at::Tensor& q_in, const at::Tensor& k_in,
                          const at::Tensor& v_in, const at::Tensor& mask_in, double scale,
                          double cap, const std::optional<at::Tensor>& sinks_in) {
  TORCH_CHECK(q_in.dim() == 4, "span_attention: q must be (B, H, T, D)");
  TORCH_CHECK(k_in.dim() == 4 && v_in.sizes() == k_in.sizes() && k_in.size(0) == q_in.size(0) &&
                  k_in.size(3) == q_in.size(3) && k_in.dtype() == v_in.dtype(),
              "span_attention: k and v must be (B, Hkv, S, D) of one dtype");
  TORCH_CHECK(q_in.size(1) % k_in.size(1) == 0 && q_in.size(1) / k_in.size(1) <= MAX_GROUP,
              "span_attention: H must be a multiple of Hkv, at most 64 times it");
  TORCH_CHECK(q_in.size(3) % LANES == 0, "span_attention: D must be a multiple of 16");
  TORCH_CHECK(mask_in.dim() == 4 && mask_in.size(-1) == k_in.size(2) &&
                  mask_in.size(2) == q_in.size(2) &&
                  (mask_in.size(0) == 1 || mask_in.size(0) == q_in.size(0)) &&
                  mask_in.scalar_type() == at::kBool,
              "span_attention: mask must be bool (B or 1, 1, T, S)");
  TORCH_CHECK(cpu_has_vnni(), "span_attention: needs AVX-512");
  auto last_dense = [](const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); };
  const at::Tensor q = last_dense(q_in.to(at::kFloat)), k = last_dense(k_in),
                   v = last_dense(v_in);
  std::optional<at::Tensor> sinks;
  if (sinks_in.has_value()) sinks = sinks_in->to(at::kFloat).contiguous();
  switch (k.scalar_type()) {
    case at::kFloat: return run<float>(q, k, v, mask_in, scale, cap, sinks);
    case at::kBFloat16: return run<c10::BFloat16>(q, k, v, mask_in, scale, cap, sinks);
    case at::kHalf: return run<c10::Half>(q, k, v, mask_in, scale, cap, sinks);
    default: TORCH_CHECK(false, "span_attention: k and v must be float32, bfloat16 or float16");
  }
}

}  // namespace
}  // namespace ollamapy_native

TORCH_LIBRARY_IMPL(ollamapy_native, CPU, m) {
  m.impl("span_attention", &ollamapy_native::span_attention);
}
