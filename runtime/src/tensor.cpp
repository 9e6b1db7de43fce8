#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>

#include "hattn/hattn.h"

namespace hattn {

const char* to_string(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::f16:
      return "f16";
    case DType::bf16:
      return "bf16";
  }
  return "unknown-dtype";
}

const char* to_string(Device d) {
  switch (d) {
    case Device::cpu:
      return "cpu";
    case Device::cuda:
      return "cuda";
  }
  return "unknown-device";
}

TensorView TensorView::strided(float* data, std::vector<int64_t> shape,
                               std::vector<int64_t> strides) {
  TensorView t;
  t.data = data;
  t.rank = static_cast<int>(shape.size() <= 4 && shape.size() == strides.size() ? shape.size() : 0);
  for (int i = 0; i < t.rank; ++i) {
    t.shape[i] = shape[i];
    t.strides[i] = strides[i];
  }
  if (t.rank == 0 && !shape.empty()) t.rank = -1;  // refused by validation with a reason
  return t;
}

TensorView TensorView::strided(const float* data, std::vector<int64_t> shape,
                               std::vector<int64_t> strides) {
  return strided(const_cast<float*>(data), std::move(shape), std::move(strides));
}

TensorView TensorView::contiguous(float* data, std::vector<int64_t> shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strided(data, std::move(shape), std::move(strides));
}

TensorView TensorView::contiguous(const float* data, std::vector<int64_t> shape) {
  return contiguous(const_cast<float*>(data), std::move(shape));
}

TensorView TensorView::strided(void* data, DType dtype, std::vector<int64_t> shape,
                               std::vector<int64_t> strides) {
  TensorView t = strided(static_cast<float*>(data), std::move(shape), std::move(strides));
  t.dtype = dtype;
  return t;
}

TensorView TensorView::contiguous(void* data, DType dtype, std::vector<int64_t> shape) {
  TensorView t = contiguous(static_cast<float*>(data), std::move(shape));
  t.dtype = dtype;
  return t;
}

TensorView TensorView::contiguous(const void* data, DType dtype, std::vector<int64_t> shape) {
  return contiguous(const_cast<void*>(data), dtype, std::move(shape));
}

namespace {

// IEEE binary16 from fp32, nearest even, by bits (no compiler half type: g++ 12 has none in C++ on
// aarch64).
uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN stays NaN
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: infinity
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal half, in steps of 2^-24
    float a;
    std::memcpy(&a, &ax, sizeof a);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.f)));
  }
  uint32_t h = ((ax >> 23) - 112u) << 10 | ((ax >> 13) & 0x3ffu);  // rebias 127 -> 15
  const uint32_t rest = ax & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry moves to the next binade
  return static_cast<uint16_t>(sign | h);
}

float f16_to_f32(uint16_t h) {
  const float sign = (h & 0x8000u) ? -1.f : 1.f;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  if (exponent == 0x1f) {
    return mantissa ? std::numeric_limits<float>::quiet_NaN()
                    : sign * std::numeric_limits<float>::infinity();
  }
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -24);
  return sign * std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
}

}  // namespace

uint16_t to_16bit(DType dtype, float x) {
  if (dtype == DType::f16) return f32_to_f16(x);
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

float from_16bit(DType dtype, uint16_t bits) {
  if (dtype == DType::f16) return f16_to_f32(bits);
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &wide, sizeof x);
  return x;
}

int64_t TensorView::numel() const {
  if (rank <= 0) return 0;
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= shape[i];
  return n;
}

std::string TensorView::describe() const {
  std::ostringstream o;
  o << to_string(dtype) << " " << to_string(device) << " [";
  for (int i = 0; i < rank; ++i) o << (i ? ", " : "") << shape[i];
  o << "] strides [";
  for (int i = 0; i < rank; ++i) o << (i ? ", " : "") << strides[i];
  o << "]";
  return o.str();
}

}  // namespace hattn
