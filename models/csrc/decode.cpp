// quern's decoding kernels: matrix products for a few rows of activations (batch-1 to
// batch-8 decoding), where libtorch's sgemv/sgemm and its int8 weight-only product read the
// weights well below the memory bandwidth (BENCHMARKS.md, "generate" and "compress").
//
// y[m, j] = (sum_k x[m, k] * w[j, k]) * scale[j] + bias[j] for m < M <= 8: each weight row
// is read once for all M rows of x, several rows at a time so that every activation load
// feeds several multiply-adds. int8 weights multiply activations rounded to int16 per row
// (relative rounding error at most 2^-16 of the row's largest value; libtorch's int8 product
// rounds them to bf16, 2^-9) with exact int32 sums, and are prefetched a pass ahead. int4
// group-wise weights (two codes to a byte, f32 scale and minimum per group) take the same
// int16 activations (`rows_i4`).
// Rows of w are split over libtorch's own intra-op thread pool (`at::parallel_for`), so no
// second pool competes with libtorch's OpenMP threads for the cores.
//
// The AVX2/FMA code is compiled for that target only and chosen at run time; callers ask
// `quern_matvec_supported()` first and use libtorch's product where it says no.
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <cstdint>
#include <vector>

namespace {

#pragma GCC push_options
#pragma GCC target("avx2,fma")

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  __m128 s = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, s);
  s = _mm_add_ss(s, sh);
  return _mm_cvtss_f32(s);
}

inline __m256 load8(const float *p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const int8_t *p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))));
}

// Rows j0..j1 of y for M activation rows, R weight rows per pass. `out(m, j, dot)` stores.
template <int M, int R, typename WT, typename Out>
void rows(const float *x, int64_t k, const WT *w, int64_t j0, int64_t j1, Out out) {
  int64_t j = j0;
  for (; j + R <= j1; j += R) {
    __m256 acc[M][R];
    for (int m = 0; m < M; ++m)
      for (int r = 0; r < R; ++r) acc[m][r] = _mm256_setzero_ps();
    const WT *wr[R];
    for (int r = 0; r < R; ++r) wr[r] = w + (j + r) * k;
    int64_t kk = 0;
    if (M == 1) {
      // One activation row: a second set of accumulators for the odd steps, so that the
      // FMA latency chains are eight deep instead of four.
      __m256 acc2[R];
      for (int r = 0; r < R; ++r) acc2[r] = _mm256_setzero_ps();
      for (; kk + 16 <= k; kk += 16) {
        __m256 xa = _mm256_loadu_ps(x + kk);
        __m256 xb = _mm256_loadu_ps(x + kk + 8);
        for (int r = 0; r < R; ++r) {
          acc[0][r] = _mm256_fmadd_ps(xa, load8(wr[r] + kk), acc[0][r]);
          acc2[r] = _mm256_fmadd_ps(xb, load8(wr[r] + kk + 8), acc2[r]);
        }
      }
      for (int r = 0; r < R; ++r) acc[0][r] = _mm256_add_ps(acc[0][r], acc2[r]);
    }
    for (; kk + 8 <= k; kk += 8) {
      __m256 wv[R];
      for (int r = 0; r < R; ++r) wv[r] = load8(wr[r] + kk);
      for (int m = 0; m < M; ++m) {
        __m256 xv = _mm256_loadu_ps(x + m * k + kk);
        for (int r = 0; r < R; ++r) acc[m][r] = _mm256_fmadd_ps(xv, wv[r], acc[m][r]);
      }
    }
    for (int m = 0; m < M; ++m) {
      for (int r = 0; r < R; ++r) {
        float s = hsum(acc[m][r]);
        for (int64_t t = kk; t < k; ++t) s += x[m * k + t] * static_cast<float>(wr[r][t]);
        out(m, j + r, s);
      }
    }
  }
  if (R > 1 && j < j1) {
    rows<M, 1, WT, Out>(x, k, w, j, j1, out);
  }
}

// int8 weights against activations rounded to int16 (`xq`, one scale per activation row in
// `xs`): 16 weights per vpmovsxbw + vpmaddwd + vpaddd, half the instructions of widening
// them to f32. Products are exact in int32; a lane gains at most 2 * 127 * 32767 per step,
// so the sums go to f32 every 4096 inputs, before they could overflow.
template <int M, int R, typename Out>
void rows_i8(const int16_t *xq, const float *xs, int64_t k, const int8_t *w, int64_t j0, int64_t j1, Out out) {
  constexpr int64_t kChunk = 4096;
  int64_t j = j0;
  for (; j + R <= j1; j += R) {
    float tot[M][R] = {};
    const int8_t *wr[R];
    for (int r = 0; r < R; ++r) wr[r] = w + (j + r) * k;
    for (int64_t c0 = 0; c0 < k; c0 += kChunk) {
      const int64_t c1 = c0 + kChunk < k ? c0 + kChunk : k;
      __m256i acc[M][R];
      for (int m = 0; m < M; ++m)
        for (int r = 0; r < R; ++r) acc[m][r] = _mm256_setzero_si256();
      int64_t kk = c0;
      for (; kk + 16 <= c1; kk += 16) {
        // The next pass's rows, one cache line per row every fourth step: a matrix's rows
        // are short streams (576 bytes in SmolLM2), too short for the hardware prefetcher.
        if ((kk & 63) == 0)
          for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char *>(wr[r] + 2 * R * k + kk), _MM_HINT_T0);
        __m256i wv[R];
        for (int r = 0; r < R; ++r)
          wv[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(wr[r] + kk)));
        for (int m = 0; m < M; ++m) {
          __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq + m * k + kk));
          for (int r = 0; r < R; ++r) acc[m][r] = _mm256_add_epi32(acc[m][r], _mm256_madd_epi16(xv, wv[r]));
        }
      }
      for (int m = 0; m < M; ++m) {
        for (int r = 0; r < R; ++r) {
          __m128i lo = _mm256_castsi256_si128(acc[m][r]);
          __m128i hi = _mm256_extracti128_si256(acc[m][r], 1);
          __m128i s4 = _mm_add_epi32(lo, hi);
          s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
          s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
          int64_t dot = _mm_cvtsi128_si32(s4);
          for (int64_t t = kk; t < c1; ++t) dot += static_cast<int64_t>(xq[m * k + t]) * wr[r][t];
          tot[m][r] += static_cast<float>(dot);
        }
      }
    }
    for (int m = 0; m < M; ++m)
      for (int r = 0; r < R; ++r) out(m, j + r, tot[m][r] * xs[m]);
  }
  if (R > 1 && j < j1) {
    rows_i8<M, 1, Out>(xq, xs, k, w, j, j1, out);
  }
}

// int4 weights, group-wise and asymmetric: w[j, i] = q[j, i] * sc[j, g] + mn[j, g] with
// g = i / group (the last group may be shorter) and q in 0..15, two codes to a byte in blocks
// of 32 inputs (byte t of a row's block c holds q[32c + t] in its low nibble and q[32c + 16 + t] in its high one). Against
// activations rounded to int16 (`xq`, row scales `xs`): each block is two vpmovzxbw +
// vpmaddwd pairs, exact in int32 (a lane gains at most 4 * 15 * 32767 per block, so a group
// of up to 8,192 inputs cannot overflow), and each group's integer sum is scaled into an f32
// accumulator once. The minimums multiply the exact per-group sums of the activations
// (`xsum [M, groups]`), so they add no rounding of their own.
template <int M, int R, typename Out>
void rows_i4(const int16_t *xq, const float *xs, const float *xsum, int64_t k, int64_t group, const uint8_t *w,
             const float *sc, const float *mn, int64_t j0, int64_t j1, Out out) {
  const int64_t groups = (k + group - 1) / group;
  const int64_t kb = k / 2;
  const __m128i low4 = _mm_set1_epi8(0x0F);
  int64_t j = j0;
  for (; j + R <= j1; j += R) {
    __m256 facc[M][R];
    for (int m = 0; m < M; ++m)
      for (int r = 0; r < R; ++r) facc[m][r] = _mm256_setzero_ps();
    const uint8_t *wr[R];
    for (int r = 0; r < R; ++r) wr[r] = w + (j + r) * kb;
    for (int64_t g = 0; g < groups; ++g) {
      __m256i acc[M][R];
      for (int m = 0; m < M; ++m)
        for (int r = 0; r < R; ++r) acc[m][r] = _mm256_setzero_si256();
      const int64_t g1 = std::min((g + 1) * group, k);
      for (int64_t kk = g * group; kk < g1; kk += 32) {
        if ((kk & 127) == 0)
          for (int r = 0; r < R; ++r)
            _mm_prefetch(reinterpret_cast<const char *>(wr[r] + 2 * R * kb + kk / 2), _MM_HINT_T0);
        // One weight row at a time, the activations reloaded from L1 for each: the unpacked
        // codes of several rows at once would not fit the 16 ymm registers beside the
        // accumulators.
        for (int r = 0; r < R; ++r) {
          const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(wr[r] + kk / 2));
          const __m256i lo = _mm256_cvtepu8_epi16(_mm_and_si128(b, low4));
          const __m256i hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(b, 4), low4));
          for (int m = 0; m < M; ++m) {
            const __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq + m * k + kk));
            const __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq + m * k + kk + 16));
            acc[m][r] = _mm256_add_epi32(acc[m][r],
                                         _mm256_add_epi32(_mm256_madd_epi16(xa, lo), _mm256_madd_epi16(xb, hi)));
          }
        }
      }
      for (int r = 0; r < R; ++r) {
        const __m256 s = _mm256_set1_ps(sc[(j + r) * groups + g]);
        for (int m = 0; m < M; ++m) facc[m][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[m][r]), s, facc[m][r]);
      }
    }
    for (int m = 0; m < M; ++m) {
      for (int r = 0; r < R; ++r) {
        const float *mr = mn + (j + r) * groups;
        const float *xm = xsum + m * groups;
        float z = 0.0f;
        for (int64_t g = 0; g < groups; ++g) z += mr[g] * xm[g];
        out(m, j + r, hsum(facc[m][r]) * xs[m] + z);
      }
    }
  }
  if (R > 1 && j < j1) {
    rows_i4<M, 1, Out>(xq, xs, xsum, k, group, w, sc, mn, j, j1, out);
  }
}

template <typename Out>
void rows_any_i4(int64_t m, const int16_t *xq, const float *xs, const float *xsum, int64_t k, int64_t group,
                 const uint8_t *w, const float *sc, const float *mn, int64_t j0, int64_t j1, Out out) {
  switch (m) {
    case 1: rows_i4<1, 4>(xq, xs, xsum, k, group, w, sc, mn, j0, j1, out); break;
    case 2: rows_i4<2, 2>(xq, xs, xsum, k, group, w, sc, mn, j0, j1, out); break;
    case 3: rows_i4<3, 1>(xq, xs, xsum, k, group, w, sc, mn, j0, j1, out); break;
    case 4: rows_i4<4, 1>(xq, xs, xsum, k, group, w, sc, mn, j0, j1, out); break;
    case 5: rows_i4<5, 1>(xq, xs, xsum, k, group, w, sc, mn, j0, j1, out); break;
    case 6: rows_i4<6, 1>(xq, xs, xsum, k, group, w, sc, mn, j0, j1, out); break;
    case 7: rows_i4<7, 1>(xq, xs, xsum, k, group, w, sc, mn, j0, j1, out); break;
    default: rows_i4<8, 1>(xq, xs, xsum, k, group, w, sc, mn, j0, j1, out); break;
  }
}

// Weight rows per pass: enough accumulators to reuse each activation load, few enough to
// stay in the 16 ymm registers.
template <int M>
constexpr int rows_per_pass() {
  return M <= 2 ? 4 : (M <= 4 ? 2 : 1);
}

template <int M, typename WT, typename Out>
void rows_m(const float *x, int64_t k, const WT *w, int64_t j0, int64_t j1, Out out) {
  rows<M, rows_per_pass<M>(), WT, Out>(x, k, w, j0, j1, out);
}

template <typename Out>
void rows_any_i8(int64_t m, const int16_t *xq, const float *xs, int64_t k, const int8_t *w, int64_t j0,
                 int64_t j1, Out out) {
  switch (m) {
    case 1: rows_i8<1, 8>(xq, xs, k, w, j0, j1, out); break;
    case 2: rows_i8<2, 4>(xq, xs, k, w, j0, j1, out); break;
    case 3: rows_i8<3, 2>(xq, xs, k, w, j0, j1, out); break;
    case 4: rows_i8<4, 2>(xq, xs, k, w, j0, j1, out); break;
    case 5: rows_i8<5, 1>(xq, xs, k, w, j0, j1, out); break;
    case 6: rows_i8<6, 1>(xq, xs, k, w, j0, j1, out); break;
    case 7: rows_i8<7, 1>(xq, xs, k, w, j0, j1, out); break;
    default: rows_i8<8, 1>(xq, xs, k, w, j0, j1, out); break;
  }
}

// Activation rows rounded to int16: xq = round(x / s) with s = max|x| / 32767 per row.
struct Quantized {
  std::vector<int16_t> q;
  std::vector<float> s;
  Quantized(const float *x, int64_t m, int64_t k) : q(static_cast<size_t>(m * k)), s(static_cast<size_t>(m)) {
    for (int64_t r = 0; r < m; ++r) {
      float mx = 0.0f;
      for (int64_t i = 0; i < k; ++i) mx = std::max(mx, std::fabs(x[r * k + i]));
      const float sc = mx > 0.0f ? mx / 32767.0f : 1.0f;
      const float inv = 1.0f / sc;
      for (int64_t i = 0; i < k; ++i)
        q[r * k + i] = static_cast<int16_t>(std::lrintf(std::min(32767.0f, std::max(-32767.0f, x[r * k + i] * inv))));
      s[r] = sc;
    }
  }
};

template <typename WT, typename Out>
void rows_any(int64_t m, const float *x, int64_t k, const WT *w, int64_t j0, int64_t j1, Out out) {
  switch (m) {
    case 1: rows_m<1>(x, k, w, j0, j1, out); break;
    case 2: rows_m<2>(x, k, w, j0, j1, out); break;
    case 3: rows_m<3>(x, k, w, j0, j1, out); break;
    case 4: rows_m<4>(x, k, w, j0, j1, out); break;
    case 5: rows_m<5>(x, k, w, j0, j1, out); break;
    case 6: rows_m<6>(x, k, w, j0, j1, out); break;
    case 7: rows_m<7>(x, k, w, j0, j1, out); break;
    default: rows_m<8>(x, k, w, j0, j1, out); break;
  }
}

// Rows per task: about 64 KiB of weights, so that a 576-row matrix still splits over the
// cores while each task streams long enough to amortise the fork.
int64_t grain(int64_t k, int64_t elt) {
  int64_t g = (64 * 1024) / (k * elt > 0 ? k * elt : 1);
  return g < 4 ? 4 : g;
}

void linear_f32(const float *x, int64_t m, int64_t k, const float *w, int64_t n, const float *bias, float *y) {
  auto out = [=](int mi, int64_t j, float s) {
    if (bias != nullptr) s += bias[j];
    y[mi * n + j] = s;
  };
  at::parallel_for(0, n, grain(k, sizeof(float)), [&](int64_t j0, int64_t j1) {
    rows_any<float>(m, x, k, w, j0, j1, out);
  });
}

void linear_i8(const float *x, int64_t m, int64_t k, const int8_t *w, int64_t n, const float *scale,
               const float *bias, float *y) {
  Quantized xq(x, m, k);
  const int16_t *q = xq.q.data();
  const float *xs = xq.s.data();
  auto out = [=](int mi, int64_t j, float s) {
    s *= scale[j];
    if (bias != nullptr) s += bias[j];
    y[mi * n + j] = s;
  };
  at::parallel_for(0, n, grain(k, 1), [&](int64_t j0, int64_t j1) {
    rows_any_i8(m, q, xs, k, w, j0, j1, out);
  });
}

// Per-group sums of the activations, [m, groups] (the last group may be shorter).
std::vector<float> group_sums(const float *x, int64_t m, int64_t k, int64_t group) {
  const int64_t groups = (k + group - 1) / group;
  std::vector<float> out(static_cast<size_t>(m * groups), 0.0f);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0.0f;
      for (int64_t i = g * group; i < std::min((g + 1) * group, k); ++i) s += x[r * k + i];
      out[r * groups + g] = s;
    }
  return out;
}

void linear_i4(const float *x, int64_t m, int64_t k, int64_t group, const uint8_t *w, const float *sc,
               const float *mn, int64_t n, const float *bias, float *y) {
  Quantized xq(x, m, k);
  const int16_t *q = xq.q.data();
  const float *xs = xq.s.data();
  std::vector<float> sums = group_sums(x, m, k, group);
  const float *xsum = sums.data();
  auto out = [=](int mi, int64_t j, float s) {
    if (bias != nullptr) s += bias[j];
    y[mi * n + j] = s;
  };
  at::parallel_for(0, n, 2 * grain(k, 1), [&](int64_t j0, int64_t j1) {
    rows_any_i4(m, q, xs, xsum, k, group, w, sc, mn, j0, j1, out);
  });
}

// SwiGLU's first half in one pass over the gate and up matrices: y[m, j] = silu(gate[m, j] ·
// sg[j]) · (up[m, j] · su[j]), where `rows_of(up, j0, j1, out)` hands the gate's (up = false)
// or the up matrix's dots of rows j0..j1 to `out` (scales null where the dots come scaled).
template <typename RowsOf>
void swiglu_pass(int64_t n, int64_t grain_rows, const float *sg, const float *su, float *y, RowsOf rows_of) {
  at::parallel_for(0, n, grain_rows, [&](int64_t j0, int64_t j1) {
    // The gate's dots go to y first, then the up rows combine with them in place.
    auto gate = [=](int mi, int64_t j, float s) {
      if (sg != nullptr) s *= sg[j];
      y[mi * n + j] = s;
    };
    auto up = [=](int mi, int64_t j, float s) {
      if (su != nullptr) s *= su[j];
      float a = y[mi * n + j];
      float silu = a / (1.0f + std::exp(-a));
      y[mi * n + j] = silu * s;
    };
    // Blocks of 32 rows keep the gate's outputs in L1 between the two passes.
    for (int64_t b = j0; b < j1; b += 32) {
      int64_t e = b + 32 < j1 ? b + 32 : j1;
      rows_of(false, b, e, gate);
      rows_of(true, b, e, up);
    }
  });
}

// SwiGLU's first half with f32 or int8 (row-scaled) gate and up matrices.
template <typename WT>
void swiglu(const float *x, int64_t m, int64_t k, const WT *g, const float *sg, const WT *u,
            const float *su, int64_t n, float *y) {
  // int8 weights take the activations rounded to int16 (rows_i8).
  Quantized xq(x, std::is_same<WT, int8_t>::value ? m : 0, k);
  const int16_t *q = xq.q.data();
  const float *xs = xq.s.data();
  swiglu_pass(n, grain(2 * k, sizeof(WT)), sg, su, y, [=](bool up, int64_t b, int64_t e, auto out) {
    const WT *w = up ? u : g;
    if constexpr (std::is_same<WT, int8_t>::value) {
      rows_any_i8(m, q, xs, k, w, b, e, out);
    } else {
      rows_any<WT>(m, x, k, w, b, e, out);
    }
  });
}

// The same with int4 gate and up matrices (group scales and minimums applied in `rows_i4`).
void swiglu_i4(const float *x, int64_t m, int64_t k, int64_t group, const uint8_t *g, const float *gs,
               const float *gm, const uint8_t *u, const float *us, const float *um, int64_t n, float *y) {
  Quantized xq(x, m, k);
  const int16_t *q = xq.q.data();
  const float *xs = xq.s.data();
  std::vector<float> sums = group_sums(x, m, k, group);
  const float *xsum = sums.data();
  swiglu_pass(n, grain(k, 1), nullptr, nullptr, y, [=](bool up, int64_t b, int64_t e, auto out) {
    if (up) {
      rows_any_i4(m, q, xs, xsum, k, group, u, us, um, b, e, out);
    } else {
      rows_any_i4(m, q, xs, xsum, k, group, g, gs, gm, b, e, out);
    }
  });
}

// One decoding step of attention for every row and head (see quern_decode_attention).
void decode_attention(float *qkv, int64_t b, int64_t heads, int64_t kvh, int64_t hd, const float *cos,
                      const float *sin, const int64_t *pos, int64_t past, float *kc, float *vc, int64_t cap,
                      const uint8_t *mask, float *y) {
  const int64_t width = (heads + 2 * kvh) * hd;
  const int64_t s_len = past + 1;
  const int64_t half = hd / 2;
  // Rotary positions on the new query and key heads, in place, then the new key and value
  // into the cache at `past`.
  for (int64_t r = 0; r < b; ++r) {
    float *row = qkv + r * width;
    if (cos != nullptr) {
      const int64_t p = pos != nullptr ? pos[r] : past;
      const float *c = cos + p * hd;
      const float *s = sin + p * hd;
      for (int64_t h = 0; h < heads + kvh; ++h) {
        float *x = row + h * hd;
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = x[i];
          const float x2 = x[i + half];
          // x * cos + rotate_half(x) * sin, each product rounded as libtorch rounds it.
          const float a = x1 * c[i];
          const float bb = (-x2) * s[i];
          const float a2 = x2 * c[i + half];
          const float b2 = x1 * s[i + half];
          x[i] = a + bb;
          x[i + half] = a2 + b2;
        }
      }
    }
    for (int64_t h = 0; h < kvh; ++h) {
      const float *k = row + (heads + h) * hd;
      const float *v = row + (heads + kvh + h) * hd;
      float *kd = kc + ((r * kvh + h) * cap + past) * hd;
      float *vd = vc + ((r * kvh + h) * cap + past) * hd;
      for (int64_t i = 0; i < hd; ++i) {
        kd[i] = k[i];
        vd[i] = v[i];
      }
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t group = heads / kvh;
  at::parallel_for(0, b * heads, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> p(static_cast<size_t>(s_len));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r = t / heads;
      const int64_t h = t % heads;
      const float *q = qkv + r * width + h * hd;
      const float *kb = kc + (r * kvh + h / group) * cap * hd;
      const float *vb = vc + (r * kvh + h / group) * cap * hd;
      const uint8_t *mr = mask != nullptr ? mask + r * s_len : nullptr;
      float mx = -INFINITY;
      for (int64_t j = 0; j < s_len; ++j) {
        if (mr != nullptr && mr[j] == 0) {
          p[j] = -INFINITY;
          continue;
        }
        const float *k = kb + j * hd;
        __m256 acc = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= hd; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), acc);
        float d = hsum(acc);
        for (; i < hd; ++i) d += q[i] * k[i];
        d *= scale;
        p[j] = d;
        if (d > mx) mx = d;
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < s_len; ++j) {
        const float e = p[j] == -INFINITY ? 0.0f : std::exp(p[j] - mx);
        p[j] = e;
        sum += e;
      }
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      float *out = y + r * heads * hd + h * hd;
      for (int64_t i = 0; i < hd; ++i) out[i] = 0.0f;
      for (int64_t j = 0; j < s_len; ++j) {
        if (p[j] == 0.0f) continue;
        const float w = p[j] * inv;
        const float *v = vb + j * hd;
        const __m256 wv = _mm256_set1_ps(w);
        int64_t i = 0;
        for (; i + 8 <= hd; i += 8)
          _mm256_storeu_ps(out + i, _mm256_fmadd_ps(wv, _mm256_loadu_ps(v + i), _mm256_loadu_ps(out + i)));
        for (; i < hd; ++i) out[i] += w * v[i];
      }
    }
  });
}

#pragma GCC pop_options

}  // namespace

extern "C" {

// 1 when this CPU runs the kernels (AVX2 and FMA), else 0.
int quern_matvec_supported() {
  __builtin_cpu_init();
  return (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
}

// 1 when autograd records operations on this thread (the kernels are inference-only).
int quern_grad_enabled() { return c10::GradMode::is_enabled() ? 1 : 0; }

// y[m, n] = x[m, k] · w[n, k]^T (+ bias[n]); 1 <= m <= 8; all contiguous f32.
void quern_linear_f32(const float *x, int64_t m, int64_t k, const float *w, int64_t n,
                      const float *bias, float *y) {
  linear_f32(x, m, k, w, n, bias, y);
}

// y[m, n] = (x[m, k] · codes[n, k]^T) * scale[n] (+ bias[n]); int8 codes, f32 scales.
void quern_linear_i8(const float *x, int64_t m, int64_t k, const int8_t *codes, const float *scale,
                     int64_t n, const float *bias, float *y) {
  linear_i8(x, m, k, codes, n, scale, bias, y);
}

// y[m, n] = silu(x · g^T) * (x · u^T), f32 weights [n, k].
void quern_swiglu_f32(const float *x, int64_t m, int64_t k, const float *g, const float *u, int64_t n,
                      float *y) {
  swiglu<float>(x, m, k, g, nullptr, u, nullptr, n, y);
}

// The same with int8 codes and per-row f32 scales.
void quern_swiglu_i8(const float *x, int64_t m, int64_t k, const int8_t *g, const float *sg,
                     const int8_t *u, const float *su, int64_t n, float *y) {
  swiglu<int8_t>(x, m, k, g, sg, u, su, n, y);
}

// One decoding step of attention (one new token per row, KV cache, inference):
// - qkv [b, (heads + 2 kvh) hd]: the new token's query, key and value heads; the query and
//   key heads are rotated in place when `cos`/`sin` ([positions, hd] tables) are given, at
//   `pos[r]` (or `past` when `pos` is null);
// - the new key and value go into the caches kc, vc [b, kvh, cap, hd] at position `past`;
// - y [b, heads hd] = softmax(q k^T / sqrt(hd)) v over cached positions 0..=past, keys with
//   mask[r, j] == 0 ([b, past + 1], null = all) left out; query head h reads key/value head
//   h / (heads / kvh).
void quern_decode_attention(float *qkv, int64_t b, int64_t heads, int64_t kvh, int64_t hd, const float *cos,
                            const float *sin, const int64_t *pos, int64_t past, float *kc, float *vc,
                            int64_t cap, const uint8_t *mask, float *y) {
  decode_attention(qkv, b, heads, kvh, hd, cos, sin, pos, past, kc, vc, cap, mask, y);
}

// y[m, n] = x[m, k] · w[n, k]^T (+ bias[n]) for int4 weights in the block layout of
// `rows_i4` (`codes [n, k / 2]` bytes, `scale` and `min [n, ceil(k / group)]` f32); k and group
// multiples of 32 (the last group may be shorter than the others).
void quern_linear_i4(const float *x, int64_t m, int64_t k, int64_t group, const uint8_t *codes,
                     const float *scale, const float *min, int64_t n, const float *bias, float *y) {
  linear_i4(x, m, k, group, codes, scale, min, n, bias, y);
}

// y[m, n] = silu(x · g^T) * (x · u^T) with int4 g and u as in quern_linear_i4.
void quern_swiglu_i4(const float *x, int64_t m, int64_t k, int64_t group, const uint8_t *g, const float *gs,
                     const float *gm, const uint8_t *u, const float *us, const float *um, int64_t n, float *y) {
  swiglu_i4(x, m, k, group, g, gs, gm, u, us, um, n, y);
}
}
