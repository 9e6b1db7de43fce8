// The bf16 conversions CUDA kernels are built with (generators/dtype_casts.h: bit operations,
// since Halide 21's PTX backend cannot cast bf16), compiled here by Halide's JIT for this CPU and
// compared with the test's own double-precision conversion (test_support: the nearest bf16,
// ties to even) and the runtime's hattn::to_16bit. Covers every bf16 bit pattern widened, and
// narrowed: every bf16 value, the halfway points between neighbours (ties both ways), one ulp of
// fp32 either side of them, infinities, NaNs, the largest finite floats, subnormals, signed zeros
// and random floats from a printed seed. Without a GPU this is what checks the CUDA kernels'
// conversions; the CUDA tests check them in the kernels when a GPU is there.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "Halide.h"
#include "dtype_casts.h"
#include "test_support.h"

namespace {

using hattn_test::ref_from_16bit;
using hattn_test::ref_to_16bit;
using hattn_test::TestRng;

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// widen_to_f32 / narrow_from_f32 with bf16_bits, as one JIT pipeline each.
std::vector<float> widen(const std::vector<uint16_t>& bits) {
  Halide::Buffer<uint16_t> in(static_cast<int>(bits.size()));
  std::memcpy(in.data(), bits.data(), bits.size() * sizeof(uint16_t));
  Halide::Var i("i");
  Halide::Func f("widen");
  f(i) = hattn::widen_to_f32(Halide::reinterpret(Halide::BFloat(16), in(i)), true);
  f.vectorize(i, 8, Halide::TailStrategy::GuardWithIf);
  Halide::Buffer<float> out = f.realize({static_cast<int>(bits.size())});
  return std::vector<float>(out.data(), out.data() + bits.size());
}

std::vector<uint16_t> narrow(const std::vector<float>& values) {
  Halide::Buffer<float> in(static_cast<int>(values.size()));
  std::memcpy(in.data(), values.data(), values.size() * sizeof(float));
  Halide::Var i("i");
  Halide::Func f("narrow");
  f(i) = Halide::reinterpret<uint16_t>(hattn::narrow_from_f32(Halide::BFloat(16), in(i), true));
  f.vectorize(i, 8, Halide::TailStrategy::GuardWithIf);
  Halide::Buffer<uint16_t> out = f.realize({static_cast<int>(values.size())});
  return std::vector<uint16_t>(out.data(), out.data() + values.size());
}

TEST(Bf16Bits, WidensEveryPatternExactly) {
  std::vector<uint16_t> bits(1 << 16);
  for (uint32_t b = 0; b < bits.size(); ++b) {
    bits[b] = static_cast<uint16_t>(b);
  }
  const std::vector<float> got = widen(bits);
  int bad = 0;
  for (uint32_t b = 0; b < bits.size() && bad < 5; ++b) {
    const float want = ref_from_16bit(hattn::DType::bf16, static_cast<uint16_t>(b));
    const bool same = std::isnan(want) ? std::isnan(got[b]) && to_bits(got[b]) == b << 16
                                       : to_bits(got[b]) == to_bits(want);
    if (!same) {
      ADD_FAILURE() << "bf16 0x" << std::hex << b << " widened to " << got[b] << ", want " << want;
      ++bad;
    }
  }
}

TEST(Bf16Bits, NarrowsToNearestEven) {
  TestRng rng("bf16_narrow");
  SCOPED_TRACE(rng.description());
  std::vector<float> x;
  for (uint32_t b = 0; b < (1u << 16); ++b) {
    const uint32_t u = b << 16;
    // The value, the halfway point to the next pattern, and one fp32 ulp either side of it.
    for (uint32_t low : {0u, 0x7fffu, 0x8000u, 0x8001u, 0x0001u, 0xffffu}) {
      x.push_back(from_bits(u | low));
    }
  }
  for (float f : {0.f, -0.f, std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::max(),
                  -std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                  std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::quiet_NaN(),
                  from_bits(0x7f800001u), from_bits(0xff80ffffu), from_bits(0x7fffffffu)}) {
    x.push_back(f);
  }
  for (int n = 0; n < (1 << 20); ++n) {
    x.push_back(from_bits(static_cast<uint32_t>(rng.engine()())));
  }
  const std::vector<uint16_t> got = narrow(x);
  int bad = 0;
  for (size_t n = 0; n < x.size() && bad < 5; ++n) {
    if (std::isnan(x[n])) {
      // NaN stays NaN (quieted), keeping its sign.
      const bool nan = (got[n] & 0x7f80u) == 0x7f80u && (got[n] & 0x7fu) != 0;
      const bool sign = (got[n] >> 15) == (to_bits(x[n]) >> 31);
      if (!(nan && sign)) {
        ADD_FAILURE() << "NaN 0x" << std::hex << to_bits(x[n]) << " narrowed to 0x" << got[n];
        ++bad;
      }
      continue;
    }
    const uint16_t want = ref_to_16bit(hattn::DType::bf16, x[n]);
    if (got[n] != want || got[n] != hattn::to_16bit(hattn::DType::bf16, x[n])) {
      ADD_FAILURE() << "fp32 0x" << std::hex << to_bits(x[n]) << " (" << x[n] << ") narrowed to 0x"
                    << got[n] << ", want 0x" << want;
      ++bad;
    }
  }
}

}  // namespace
