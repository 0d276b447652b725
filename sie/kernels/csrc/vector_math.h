// Vector math shared by sie's C++ CPU kernels: 16 fp32 lanes of AVX-512.
#pragma once

#include <immintrin.h>

namespace sie_cpu {

// 2^t on 16 lanes for t <= 0 (in attention: scores minus their row maximum, in units of log2(e)), with t = n + f,
// |f| <= 1/2: 2^f by a degree-5 polynomial (coefficients fitted for relative error, 2.3e-7 at most: fp32's own
// rounding, where attention's probabilities are then rounded to bf16, 2e-3), times 2^n by scalef.
inline __m512 exp2_16(__m512 t) {
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(1.326697994954884e-3f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.675469249486923e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550742521882057e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022121727466583e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931469440460205e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0000001192092896f));
  return _mm512_scalef_ps(p, n);
}

// exp(x) on 16 lanes for x <= 0: 2^(x log2(e)).
inline __m512 exp16(__m512 x) { return exp2_16(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f))); }

// erf(x) on 16 lanes, Abramowitz and Stegun 7.1.26 (absolute error 1.5e-7), the formula of PyTorch's own
// vectorised erf, and so of its fp32 GELU: sign(x) (1 - poly(t) t exp(-x^2)) with t = 1 / (1 + 0.3275911 |x|).
inline __m512 erf16(__m512 x) {
  const __m512 sign = _mm512_and_ps(x, _mm512_set1_ps(-0.0f));
  const __m512 magnitude = _mm512_abs_ps(x);
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                                 _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), magnitude, _mm512_set1_ps(1.0f)));
  __m512 r = _mm512_set1_ps(1.061405429f);
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(-1.453152027f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(1.421413741f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(-0.284496736f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(0.254829592f));
  // exp(-x^2), its argument bounded where exp underflows anyway, so that 2^n stays finite.
  const __m512 decay = exp16(_mm512_max_ps(_mm512_mul_ps(magnitude, _mm512_sub_ps(_mm512_setzero_ps(), magnitude)),
                                           _mm512_set1_ps(-104.0f)));
  const __m512 complement = _mm512_mul_ps(_mm512_mul_ps(r, t), decay);
  return _mm512_or_ps(sign, _mm512_sub_ps(_mm512_set1_ps(1.0f), complement));
}

// Exact GELU, x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, on 16 lanes.
inline __m512 gelu16(__m512 x) {
  const __m512 scaled = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
  const __m512 cdf = _mm512_add_ps(_mm512_set1_ps(1.0f), erf16(scaled));
  return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), cdf);
}

}  // namespace sie_cpu
