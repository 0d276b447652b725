// Variable-length multi-head attention on x86 CPUs with AVX512-BF16: bf16 q, k, v and output, fp32 scores.
//
// PyTorch's CPU flash kernel reaches a fifth of the bf16 matmul peak on reranking shapes (sequences of 30-300
// tokens, head_dim 32): its blocks are sized for long sequences and its products go through a general GEMM. Here
// one (sequence, head) is one task. K and V are repacked once per task into the pair layout of `vdpbf16ps`, which
// multiplies pairs of bf16 values and accumulates in fp32, so both products run in registers: scores for a tile of
// query rows x 32 keys, then probabilities x V for the same rows. A sequence's keys fit in one pass (no online
// rescaling): a tile's scores are kept for all its keys, softmax is exact per row, and the unnormalised
// probabilities are rounded to bf16 before the second product, as flash-attn does on a GPU. Scores are kept
// unscaled; the softmax scale and log2(e) enter once, in the exponential's argument (one fused multiply-subtract).
// Past a sequence's last key, work stops at the next 16 keys (scores, exponentials) or 2 keys (P x V), not 32.
//
// Shapes: q [total_q, heads, D]; k, v [total_k, kv_heads, D], any strides but contiguous heads;
// cu_seqlens, cu_seqlens_q int32 [batch + 1]; head dims 32, 64 and 128. Query head h reads key/value head
// h / (heads / kv_heads). Causal masks and windows align to the bottom right; a row that sees no key gets zeros.
#include <immintrin.h>

#include <type_traits>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vector_math.h"

namespace {

using sie_cpu::exp2_16;

constexpr int KEY_BLOCK = 32;  // keys per score step: two 16-lane registers

// The 16 lanes starting at key `first` that lie in [lo, hi).
inline __mmask16 lanes_within(int first, int lo, int hi) {
  const int begin = std::clamp(lo - first, 0, 16), end = std::clamp(hi - first, 0, 16);
  return static_cast<__mmask16>(((1u << end) - 1) & ~((1u << begin) - 1));
}

inline __m512bh broadcast_pair(const uint16_t* pair) {
  int32_t bits;
  std::memcpy(&bits, pair, sizeof(bits));
  return (__m512bh)_mm512_set1_epi32(bits);
}

// Rows j of 16 dwords each, transposed in registers: rows[j][c] -> rows[c][j]. Two rounds of unpacks transpose the
// 4 x 4 blocks inside each 128-bit lane, two rounds of lane shuffles move the blocks into place.
inline void transpose_16x16(__m512i rows[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(rows[2 * i], rows[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(rows[2 * i], rows[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // rows[4i + c] lane L: column 4L + c of rows 4i .. 4i + 3
    rows[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    rows[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    rows[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    rows[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i low01 = _mm512_shuffle_i32x4(rows[c], rows[4 + c], 0x44);
    const __m512i high01 = _mm512_shuffle_i32x4(rows[c], rows[4 + c], 0xEE);
    const __m512i low23 = _mm512_shuffle_i32x4(rows[8 + c], rows[12 + c], 0x44);
    const __m512i high23 = _mm512_shuffle_i32x4(rows[8 + c], rows[12 + c], 0xEE);
    t[c] = _mm512_shuffle_i32x4(low01, low23, 0x88);
    t[4 + c] = _mm512_shuffle_i32x4(low01, low23, 0xDD);
    t[8 + c] = _mm512_shuffle_i32x4(high01, high23, 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(high01, high23, 0xDD);
  }
  for (int j = 0; j < 16; ++j) rows[j] = t[j];
}

// K [len_k rows of D] -> [D / 2][keys][2], zeros past len_k: one 512-bit load is then 16 keys x one pair of dims.
template <int D>
void pack_keys(const uint16_t* k, int64_t stride, int len_k, int keys, uint16_t* packed) {
  for (int j0 = 0; j0 < keys; j0 += 16) {
    // The rows sit a whole token's q, k and v apart: prefetch the next 16 while these are transposed.
    for (int j = j0 + 16; j < std::min(j0 + 32, len_k); ++j)
      _mm_prefetch(reinterpret_cast<const char*>(k + j * stride), _MM_HINT_T0);
    for (int c = 0; c < D / 32; ++c) {  // 16 pairs of dims per register
      __m512i rows[16];
      for (int j = 0; j < 16; ++j)
        rows[j] = j0 + j < len_k ? _mm512_loadu_si512(k + (j0 + j) * stride + 32 * c) : _mm512_setzero_si512();
      transpose_16x16(rows);
      for (int p = 0; p < 16; ++p)
        _mm512_storeu_si512(packed + (static_cast<size_t>(16 * c + p) * keys + j0) * 2, rows[p]);
    }
  }
}

// V [len_k rows of D] -> [keys / 2][D][2], zeros past len_k: one load is then 16 output dims x one pair of keys.
template <int D>
void pack_values(const uint16_t* v, int64_t stride, int len_k, int keys, uint16_t* packed) {
  alignas(64) static const uint16_t low_half[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                    8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i low = _mm512_load_si512(low_half);
  const __m512i high = _mm512_add_epi16(low, _mm512_set1_epi16(16));
  for (int j = 0; j < keys; j += 2) {
    if (j + 8 < len_k) _mm_prefetch(reinterpret_cast<const char*>(v + (j + 8) * stride), _MM_HINT_T0);
    if (j + 9 < len_k) _mm_prefetch(reinterpret_cast<const char*>(v + (j + 9) * stride), _MM_HINT_T0);
    for (int c = 0; c < D / 32; ++c) {
      const __m512i even = j < len_k ? _mm512_loadu_si512(v + j * stride + 32 * c) : _mm512_setzero_si512();
      const __m512i odd = j + 1 < len_k ? _mm512_loadu_si512(v + (j + 1) * stride + 32 * c) : _mm512_setzero_si512();
      uint16_t* dst = packed + (static_cast<size_t>(j / 2) * D + 32 * c) * 2;
      _mm512_storeu_si512(dst, _mm512_permutex2var_epi16(even, low, odd));
      _mm512_storeu_si512(dst + 32, _mm512_permutex2var_epi16(even, high, odd));
    }
  }
}

struct Scratch {
  std::vector<uint16_t> k_packed, v_packed, probs;
  std::vector<float> scores;
};

struct Mask {
  bool causal;
  int left, right;  // window sides, -1 for no bound
};

// One (sequence, query head). Row pointers advance by the given strides (elements); M query rows per tile keep
// M x D / 16 output accumulators and M x 2 score accumulators in the 32 vector registers.
template <int D, int M>
void attend(const uint16_t* q, int64_t q_stride, const uint16_t* k, int64_t k_stride, const uint16_t* v,
            int64_t v_stride, uint16_t* out, int64_t out_stride, int len_q, int len_k, Mask mask, float scale,
            Scratch& scratch) {
  constexpr int PAIRS = D / 2, OUT_VECTORS = D / 16;
  const int keys = (len_k + KEY_BLOCK - 1) / KEY_BLOCK * KEY_BLOCK;
  scratch.k_packed.resize(static_cast<size_t>(PAIRS) * keys * 2);
  scratch.v_packed.resize(static_cast<size_t>(keys) * D);
  pack_keys<D>(k, k_stride, len_k, keys, scratch.k_packed.data());
  pack_values<D>(v, v_stride, len_k, keys, scratch.v_packed.data());
  scratch.scores.resize(static_cast<size_t>(M) * keys);
  scratch.probs.resize(static_cast<size_t>(M) * keys);  // each tile writes every entry it reads
  const int shift = len_k - len_q;
  for (int r0 = 0; r0 < len_q; r0 += M) {
    const int rows = std::min(M, len_q - r0);
    int lo[M], hi[M];
    int tile_lo = len_k, tile_hi = 0;
    for (int m = 0; m < M; ++m) {
      const int position = r0 + std::min(m, rows - 1) + shift;  // the query's place among the keys
      hi[m] = mask.causal ? std::min(len_k, position + 1) : len_k;
      if (mask.right >= 0) hi[m] = std::min(hi[m], position + mask.right + 1);
      lo[m] = mask.left >= 0 ? std::max(0, position - mask.left) : 0;
      if (hi[m] > lo[m]) tile_lo = std::min(tile_lo, lo[m]), tile_hi = std::max(tile_hi, hi[m]);
    }
    // Keys in [every_lo, every_hi) are visible to every row of the tile: no masks there.
    const int every_lo = *std::max_element(lo, lo + M), every_hi = *std::min_element(hi, hi + M);
    const int first_block = tile_lo / KEY_BLOCK, last_block = (tile_hi + KEY_BLOCK - 1) / KEY_BLOCK;
    for (int m = 0; m < M && r0 + M + m < len_q; ++m)  // the next tile's query rows
      _mm_prefetch(reinterpret_cast<const char*>(q + (r0 + M + m) * q_stride), _MM_HINT_T0);
    int32_t q_pairs[M][PAIRS];
    for (int m = 0; m < M; ++m) std::memcpy(q_pairs[m], q + (r0 + std::min(m, rows - 1)) * q_stride, D * 2);
    const float scale_log2e = scale * 1.44269504088896341f;  // softmax(scale s) = 2^(scale log2(e) s) / sum
    const __m512 scale16 = _mm512_set1_ps(scale_log2e);
    __m512 top[M];
    for (int m = 0; m < M; ++m) top[m] = _mm512_set1_ps(-INFINITY);
    float* const scores = scratch.scores.data();
    uint16_t* const probs = scratch.probs.data();
    // Unscaled scores for a block of keys in 16-lane vectors, and each row's running maximum over its visible keys
    // (the scale is not negative: the same keys); a last block with at most 16 keys left computes only its first
    // vector.
    const auto score_block = [&](int b, auto vectors) {
      constexpr int VECTORS = decltype(vectors)::value;
      __m512 acc[M][VECTORS];
      for (int m = 0; m < M; ++m)
        for (int t = 0; t < VECTORS; ++t) acc[m][t] = _mm512_setzero_ps();
      const uint16_t* kp = scratch.k_packed.data() + static_cast<size_t>(b) * KEY_BLOCK * 2;
      for (int p = 0; p < PAIRS; ++p) {
        __m512bh kv[VECTORS];
        for (int t = 0; t < VECTORS; ++t)
          kv[t] = (__m512bh)_mm512_loadu_si512(kp + static_cast<size_t>(p) * keys * 2 + 32 * t);
        for (int m = 0; m < M; ++m) {
          const __m512bh qp = (__m512bh)_mm512_set1_epi32(q_pairs[m][p]);
          for (int t = 0; t < VECTORS; ++t) acc[m][t] = _mm512_dpbf16_ps(acc[m][t], qp, kv[t]);
        }
      }
      const bool every = b * KEY_BLOCK >= every_lo && b * KEY_BLOCK + 16 * VECTORS <= every_hi;
      float* const block = scores + b * KEY_BLOCK;
      for (int m = 0; m < M; ++m)
        for (int t = 0; t < VECTORS; ++t) _mm512_storeu_ps(block + static_cast<size_t>(m) * keys + 16 * t, acc[m][t]);
      if (every) {
        for (int m = 0; m < M; ++m)
          for (int t = 0; t < VECTORS; ++t) top[m] = _mm512_max_ps(top[m], acc[m][t]);
      } else {
        for (int m = 0; m < M; ++m)
          for (int t = 0; t < VECTORS; ++t)
            top[m] = _mm512_mask_max_ps(top[m], lanes_within(b * KEY_BLOCK + 16 * t, lo[m], hi[m]), top[m], acc[m][t]);
      }
    };
    for (int b = first_block; b < last_block; ++b) {
      if (tile_hi - b * KEY_BLOCK <= 16) score_block(b, std::integral_constant<int, 1>{});
      else score_block(b, std::integral_constant<int, 2>{});
    }
    // Exact softmax per row, the tile's rows interleaved so that their exponentials overlap; probabilities are
    // kept unnormalised in bf16, as flash-attn does on a GPU.
    __m512 row_max[M], sum[M];
    for (int m = 0; m < M; ++m) {
      row_max[m] = _mm512_set1_ps(hi[m] > lo[m] ? _mm512_reduce_max_ps(top[m]) * scale_log2e : 0.0f);
      sum[m] = _mm512_setzero_ps();
    }
    const int exp_end = (tile_hi + 15) / 16 * 16, pair_end = (tile_hi + 1) / 2;
    for (int j = first_block * KEY_BLOCK; j < exp_end; j += 16) {
      const bool every = j >= every_lo && j + 16 <= every_hi;
      for (int m = 0; m < M; ++m) {
        const __m512 x = _mm512_loadu_ps(scores + static_cast<size_t>(m) * keys + j);
        const __mmask16 visible = every ? static_cast<__mmask16>(0xFFFF) : lanes_within(j, lo[m], hi[m]);
        const __m512 e = _mm512_maskz_mov_ps(visible, exp2_16(_mm512_fmsub_ps(x, scale16, row_max[m])));
        sum[m] = _mm512_add_ps(sum[m], e);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(probs + static_cast<size_t>(m) * keys + j),
                            (__m256i)_mm512_cvtneps_pbh(e));
      }
    }
    float row_sum[M];
    for (int m = 0; m < M; ++m) row_sum[m] = _mm512_reduce_add_ps(sum[m]);
    __m512 o[M][OUT_VECTORS];
    for (int m = 0; m < M; ++m)
      for (int t = 0; t < OUT_VECTORS; ++t) o[m][t] = _mm512_setzero_ps();
    for (int j2 = first_block * KEY_BLOCK / 2; j2 < pair_end; ++j2) {
      __m512bh vv[OUT_VECTORS];
      const uint16_t* vp = scratch.v_packed.data() + static_cast<size_t>(j2) * D * 2;
      for (int t = 0; t < OUT_VECTORS; ++t) vv[t] = (__m512bh)_mm512_loadu_si512(vp + 32 * t);
      for (int m = 0; m < M; ++m) {
        const __m512bh pp = broadcast_pair(probs + static_cast<size_t>(m) * keys + 2 * j2);
        for (int t = 0; t < OUT_VECTORS; ++t) o[m][t] = _mm512_dpbf16_ps(o[m][t], pp, vv[t]);
      }
    }
    for (int m = 0; m < rows; ++m) {
      const __m512 inverse = _mm512_set1_ps(row_sum[m] > 0.0f ? 1.0f / row_sum[m] : 0.0f);
      uint16_t* dst = out + (r0 + m) * out_stride;
      for (int t = 0; t < OUT_VECTORS; ++t)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 16 * t),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(o[m][t], inverse)));
    }
  }
}

using HeadKernel = decltype(&attend<32, 8>);

HeadKernel head_kernel(int64_t head_dim) {
  switch (head_dim) {
    case 32: return &attend<32, 8>;
    case 64: return &attend<64, 6>;
    case 128: return &attend<128, 3>;
    default: return nullptr;
  }
}

at::Tensor varlen_attention_bf16(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& cu_seqlens, const at::Tensor& cu_seqlens_q, bool causal,
                                 double softmax_scale, int64_t window_left, int64_t window_right) {
  for (const at::Tensor* t : {&q, &k, &v}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16 && t->dim() == 3 && t->stride(2) == 1 && t->device().is_cpu(),
                "sie cpu attention: q, k and v must be CPU bf16 [tokens, heads, head_dim] with contiguous heads");
  }
  TORCH_CHECK(k.sizes() == v.sizes(), "sie cpu attention: k and v shapes differ");
  TORCH_CHECK(q.size(2) == k.size(2) && k.size(1) > 0 && q.size(1) % k.size(1) == 0,
              "sie cpu attention: head shapes differ");
  TORCH_CHECK(cu_seqlens.scalar_type() == at::kInt && cu_seqlens_q.scalar_type() == at::kInt &&
              cu_seqlens.sizes() == cu_seqlens_q.sizes(), "sie cpu attention: int32 cu_seqlens of one shape");
  const HeadKernel kernel = head_kernel(q.size(2));
  TORCH_CHECK(kernel != nullptr, "sie cpu attention: head_dim ", q.size(2), " is not 32, 64 or 128");
  TORCH_CHECK(std::isfinite(softmax_scale) && softmax_scale >= 0,
              "sie cpu attention: softmax_scale must be finite and not negative, got ", softmax_scale);
  const at::Tensor bounds_k = cu_seqlens.contiguous(), bounds_q = cu_seqlens_q.contiguous();
  const int32_t* ck = bounds_k.const_data_ptr<int32_t>();
  const int32_t* cq = bounds_q.const_data_ptr<int32_t>();
  const int64_t batch = bounds_k.size(0) - 1, heads = q.size(1), groups = heads / k.size(1);
  for (int64_t b = 0; b < batch; ++b) {  // the kernel reads and writes the rows they bound, unchecked
    TORCH_CHECK(0 <= ck[b] && ck[b] <= ck[b + 1] && ck[b + 1] <= k.size(0) && 0 <= cq[b] && cq[b] <= cq[b + 1] &&
                cq[b + 1] <= q.size(0), "sie cpu attention: cu_seqlens must not decrease and must lie in [0, ",
                k.size(0), "] (k and v's tokens), cu_seqlens_q in [0, ", q.size(0), "] (q's); sequence ", b,
                " has keys [", ck[b], ", ", ck[b + 1], ") and queries [", cq[b], ", ", cq[b + 1], ")");
  }
  at::Tensor out = at::empty(q.sizes(), q.options());
  const auto* qd = reinterpret_cast<const uint16_t*>(q.const_data_ptr<c10::BFloat16>());
  const auto* kd = reinterpret_cast<const uint16_t*>(k.const_data_ptr<c10::BFloat16>());
  const auto* vd = reinterpret_cast<const uint16_t*>(v.const_data_ptr<c10::BFloat16>());
  auto* od = reinterpret_cast<uint16_t*>(out.mutable_data_ptr<c10::BFloat16>());
  // A window side as wide as q's and k's tokens together bounds nothing (no key is that far from a query): no bound,
  // rather than a side cast to int that wraps (2^32 -> 0) or that overflows the kernel's int sums with positions.
  const int64_t widest = q.size(0) + k.size(0);
  const auto side = [widest](int64_t w) { return w < 0 || w >= widest ? -1 : static_cast<int>(w); };
  const Mask mask{causal, side(window_left), side(window_right)};
  const float scale = static_cast<float>(softmax_scale);
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    // Tasks are numbered head-major, so that an even split gives each thread whole heads of every sequence, the
    // same work; a thread runs its share sequence by sequence, so that one sequence's heads read neighbouring cache
    // lines of its rows while they are cached.
    const int64_t first_head = begin / batch, last_head = (end - 1) / batch;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = first_head; h <= last_head; ++h) {
        const int64_t task = h * batch + b;
        if (task < begin || task >= end) continue;
        const int64_t kv_head = h / groups;
        const int len_q = cq[b + 1] - cq[b], len_k = ck[b + 1] - ck[b];
        if (len_q == 0) continue;
        kernel(qd + cq[b] * q.stride(0) + h * q.stride(1), q.stride(0),
               kd + ck[b] * k.stride(0) + kv_head * k.stride(1), k.stride(0),
               vd + ck[b] * v.stride(0) + kv_head * v.stride(1), v.stride(0),
               od + cq[b] * out.stride(0) + h * out.stride(1), out.stride(0), len_q, len_k, mask, scale, scratch);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(sie_cpu, m) {
  m.def("varlen_attention_bf16(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens, Tensor cu_seqlens_q, bool causal, "
        "float softmax_scale, int window_left, int window_right) -> Tensor",
        &varlen_attention_bf16);
}
