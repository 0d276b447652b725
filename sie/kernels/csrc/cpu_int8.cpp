// The int8 mode's passes around `torch._int_mm` (sie/quantization.py), each one pass over its rows with AVX-512
// instead of the 6-8 eager PyTorch ops it replaces, and bit for bit the same result:
//
//   quantize_rows(x [rows, n] fp32 or bf16, row_multiple) -> q int8 [rows rounded up to row_multiple, n] (the padded
//     rows are zeros), scale fp32 [rows]: scale = max |x| / 127 per row (1 where that would underflow), q = x /
//     scale rounded half to even. A row holding NaN or inf gets that NaN or inf as its scale and zeros as q.
//   rescale_rows_(acc int32 [>= rows, out], rows, row_scale [rows], col_scale [out], bias [out] or None, gelu)
//     -> fp32 [rows, out] = ((float(acc) * row_scale) * col_scale) + bias, in that order (no fused multiply-add:
//     the build turns contraction off), written over acc's first rows and returned as a view of them: no new
//     buffer to fault in, and each cache line is read and written once. With `gelu`, exact GELU follows in the
//     same pass (the formula of PyTorch's fp32 GELU, vector_math.h: within 2e-7 of it, not bit for bit).
#include <immintrin.h>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>

#include "vector_math.h"

namespace {

constexpr float QMAX = 127.0f;
constexpr int64_t ROWS_PER_TASK = 16;

// 16 values of a row as fp32, from fp32 or bf16 storage; lanes past `count` are zero.
inline __m512 load16(const float* x, int64_t count) {
  return count >= 16 ? _mm512_loadu_ps(x) : _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << count) - 1), x);
}
inline __m512 load16(const c10::BFloat16* x, int64_t count) {
  const __m256i bits = count >= 16 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))
                                   : _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << count) - 1), x);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

template <typename T>
void quantize_row(const T* x, int64_t n, int8_t* q, float* scale_out) {
  const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  __m512 top = _mm512_setzero_ps();
  __mmask16 unordered = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = load16(x + i, n - i);
    top = _mm512_max_ps(top, _mm512_and_ps(v, sign));
    unordered |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  const float amax = _mm512_reduce_max_ps(top);
  if (unordered || std::isinf(amax)) {  // as the eager path: the scale carries the NaN or inf, q is zeros
    *scale_out = unordered ? NAN : INFINITY;
    std::fill_n(q, n, 0);
    return;
  }
  const float scale = amax <= QMAX * FLT_MIN ? 1.0f : amax / QMAX;
  *scale_out = scale;
  const __m512 divisor = _mm512_set1_ps(scale);
  const __m512 low = _mm512_set1_ps(-QMAX), high = _mm512_set1_ps(QMAX);
  for (int64_t i = 0; i < n; i += 16) {
    __m512 v = _mm512_div_ps(load16(x + i, n - i), divisor);
    v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm512_min_ps(_mm512_max_ps(v, low), high);
    const __m128i bytes = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v));
    if (n - i >= 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), bytes);
    } else {
      _mm_mask_storeu_epi8(q + i, static_cast<__mmask16>((1u << (n - i)) - 1), bytes);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& x_in, int64_t row_multiple) {
  TORCH_CHECK(x_in.dim() == 2 && x_in.device().is_cpu() &&
              (x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kBFloat16),
              "sie quantize_rows: a CPU fp32 or bf16 [rows, n] tensor expected");
  TORCH_CHECK(row_multiple >= 1, "sie quantize_rows: row_multiple must be positive");
  const at::Tensor x = x_in.stride(1) == 1 ? x_in : x_in.contiguous();
  const int64_t rows = x.size(0), n = x.size(1);
  const int64_t padded = (rows + row_multiple - 1) / row_multiple * row_multiple;
  at::Tensor q = at::empty({padded, n}, x.options().dtype(at::kChar));
  at::Tensor scale = at::empty({rows}, x.options().dtype(at::kFloat));
  int8_t* qd = q.mutable_data_ptr<int8_t>();
  float* sd = scale.mutable_data_ptr<float>();
  std::fill_n(qd + rows * n, (padded - rows) * n, 0);
  const int64_t stride = x.stride(0);
  at::parallel_for(0, rows, ROWS_PER_TASK, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (x.scalar_type() == at::kFloat) {
        quantize_row(x.const_data_ptr<float>() + r * stride, n, qd + r * n, sd + r);
      } else {
        quantize_row(x.const_data_ptr<c10::BFloat16>() + r * stride, n, qd + r * n, sd + r);
      }
    }
  });
  return {q, scale};
}

at::Tensor rescale_rows_(at::Tensor& acc, int64_t rows, const at::Tensor& row_scale_in,
                        const at::Tensor& col_scale_in, const std::optional<at::Tensor>& bias_in, bool gelu) {
  TORCH_CHECK(acc.dim() == 2 && acc.scalar_type() == at::kInt && acc.is_contiguous() && acc.device().is_cpu(),
              "sie rescale_rows_: a contiguous CPU int32 [rows, out] tensor expected");
  TORCH_CHECK(rows >= 0 && rows <= acc.size(0), "sie rescale_rows_: rows out of range");
  const int64_t out_features = acc.size(1);
  const at::Tensor row_scale = row_scale_in.contiguous(), col_scale = col_scale_in.contiguous();
  TORCH_CHECK(row_scale.scalar_type() == at::kFloat && row_scale.numel() == rows &&
              col_scale.scalar_type() == at::kFloat && col_scale.numel() == out_features,
              "sie rescale_rows_: fp32 row_scale [rows] and col_scale [out] expected");
  std::optional<at::Tensor> bias;
  if (bias_in.has_value()) {
    bias = bias_in->contiguous();
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == out_features,
                "sie rescale_rows_: fp32 bias [out] expected");
  }
  const int32_t* ad = acc.const_data_ptr<int32_t>();
  const float* rs = row_scale.const_data_ptr<float>();
  const float* cs = col_scale.const_data_ptr<float>();
  const float* bd = bias.has_value() ? bias->const_data_ptr<float>() : nullptr;
  float* od = reinterpret_cast<float*>(acc.mutable_data_ptr<int32_t>());
  at::parallel_for(0, rows, ROWS_PER_TASK, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const __m512 row = _mm512_set1_ps(rs[r]);
      for (int64_t i = 0; i < out_features; i += 16) {
        const __mmask16 lanes = out_features - i >= 16 ? 0xFFFF
                                                       : static_cast<__mmask16>((1u << (out_features - i)) - 1);
        __m512 v = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(lanes, ad + r * out_features + i));
        v = _mm512_mul_ps(_mm512_mul_ps(v, row), _mm512_maskz_loadu_ps(lanes, cs + i));
        if (bd != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(lanes, bd + i));
        if (gelu) v = sie_cpu::gelu16(v);
        _mm512_mask_storeu_ps(od + r * out_features + i, lanes, v);
      }
    }
  });
  return acc.view(at::kFloat).narrow(0, 0, rows);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sie_cpu, m) {
  m.def("quantize_rows(Tensor x, int row_multiple) -> (Tensor, Tensor)", &quantize_rows);
  m.def("rescale_rows_(Tensor(a!) acc, int rows, Tensor row_scale, Tensor col_scale, Tensor? bias, bool gelu) "
        "-> Tensor(a!)", &rescale_rows_);
}
