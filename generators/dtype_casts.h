// Conversions between fp32 and a tensor's 16-bit dtype, written once for every algorithm and
// target: Halide's casts where they lower, bit operations where they do not (CUDA's bf16).
#pragma once

#include "Halide.h"

namespace hattn {

// Whether a kernel converts bf16 by bit operations instead of Halide's casts: Halide 21's PTX
// backend cannot cast bfloat16 (LLVM asserts "Invalid cast!" generating any CUDA kernel that
// loads or stores bf16), so CUDA kernels widen bf16 by a shift (exact: bf16 is the top half of an
// fp32) and round fp32 to bf16 to nearest even in integer arithmetic. CPU kernels keep Halide's
// casts (the same values; their lowered code unchanged).
inline bool bf16_casts_as_bits(const Halide::Target& t) { return t.has_gpu_feature(); }

// A value widened to fp32 (exact for every dtype).
inline Halide::Expr widen_to_f32(const Halide::Expr& x, bool bf16_bits) {
  if (bf16_bits && x.type().is_bfloat()) {
    return Halide::reinterpret<float>(Halide::cast<uint32_t>(Halide::reinterpret<uint16_t>(x))
                                      << 16);
  }
  return Halide::cast<float>(x);
}

// An fp32 value rounded to `t` (to nearest, ties to even; NaN stays NaN, quieted).
inline Halide::Expr narrow_from_f32(const Halide::Type& t, const Halide::Expr& x, bool bf16_bits) {
  if (!(bf16_bits && t.is_bfloat())) return Halide::cast(t, x);
  auto u32 = [](uint32_t c) { return Halide::Expr(c); };
  Halide::Expr u = Halide::reinterpret<uint32_t>(x);
  Halide::Expr rounded = (u + (u32(0x7fff) + ((u >> 16) & u32(1)))) >> 16;
  Halide::Expr nan = (u & u32(0x7fffffff)) > u32(0x7f800000);
  Halide::Expr bits = Halide::select(nan, (u >> 16) | u32(0x40), rounded);
  return Halide::reinterpret(t, Halide::cast<uint16_t>(bits));
}

}  // namespace hattn
