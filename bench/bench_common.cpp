#include "bench_common.h"

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <random>

namespace hattn_bench {

int bench_threads() {
  const char* env = std::getenv("HATTN_BENCH_THREADS");
  const int n = env ? std::atoi(env) : 2;
  return n > 0 ? n : 2;
}

std::vector<int32_t> sorted_random_subset(int64_t n, int64_t k, uint64_t* state) {
  std::vector<int32_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  std::mt19937_64 rng(*state);
  for (int64_t j = 0; j < k; ++j) {
    const auto pick = j + static_cast<int64_t>(rng() % static_cast<uint64_t>(n - j));
    std::swap(all[static_cast<size_t>(j)], all[static_cast<size_t>(pick)]);
  }
  *state = rng();
  all.resize(static_cast<size_t>(k));
  std::sort(all.begin(), all.end());
  return all;
}

void fill_random(std::vector<float>& x, uint64_t salt) {
  uint64_t state = kSeed + salt * 0x9e3779b97f4a7c15ull;
  for (float& v : x) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    v = static_cast<float>(z >> 40) * (2.f / 16777216.f) - 1.f;
  }
}

std::vector<std::vector<float>>& buffers(const std::string& key,
                                         const std::vector<int64_t>& sizes) {
  static std::string cached_key;
  static std::vector<std::vector<float>> cached;
  if (key != cached_key) {
    cached.clear();
    cached_key = key;
    for (size_t i = 0; i < sizes.size(); ++i) {
      cached.emplace_back(static_cast<size_t>(sizes[i]));
      fill_random(cached.back(), i + 1);
    }
  }
  return cached;
}

double visible_pairs(const Shape& s) {
  if (!s.causal) return static_cast<double>(s.lq) * static_cast<double>(s.lk);
  double n = 0;
  for (int64_t i = 0; i < s.lq; ++i) {
    n += static_cast<double>(std::clamp<int64_t>(i + s.lk - s.lq + 1, 0, s.lk));
  }
  return n;
}

Inputs::Inputs(const Shape& s) {
  const int64_t qn = s.batch * s.heads * s.lq * s.head_dim;
  const int64_t kn = s.batch * s.kv() * s.lk * s.head_dim;
  // Keyed by shape: hattn and the baselines at one shape read the same inputs.
  const std::string key = "attention " + std::to_string(s.batch) + "x" + std::to_string(s.heads) +
                          "x" + std::to_string(s.kv()) + "x" + std::to_string(s.lq) + "x" +
                          std::to_string(s.lk) + "x" + std::to_string(s.head_dim);
  auto& b = buffers(key, {qn, kn, kn, qn});
  q = b[0].data();
  k = b[1].data();
  v = b[2].data();
  out = b[3].data();
}

TypedInputs::TypedInputs(const Shape& s, hattn::DType dtype, bool fp32_query) : sixteen(4) {
  Inputs in(s);
  float* const fp32[4] = {in.q, in.k, in.v, in.out};
  const int64_t lengths[4] = {s.lq, s.lk, s.lk, s.lq};
  const int64_t heads[4] = {s.heads, s.kv(), s.kv(), s.heads};
  hattn::TensorView* views[4] = {&q, &k, &v, &out};
  for (int t = 0; t < 4; ++t) {
    const std::vector<int64_t> shape = {s.batch, heads[t], lengths[t], s.head_dim};
    if (dtype == hattn::DType::f32 || (fp32_query && (t == 0 || t == 3))) {
      *views[t] = hattn::TensorView::contiguous(fp32[t], shape);
      continue;
    }
    sixteen[t].resize(static_cast<size_t>(s.batch * heads[t] * lengths[t] * s.head_dim));
    for (size_t i = 0; i < sixteen[t].size(); ++i) {
      sixteen[t][i] = hattn::to_16bit(dtype, fp32[t][i]);
    }
    *views[t] = hattn::TensorView::contiguous(sixteen[t].data(), dtype, shape);
  }
}

}  // namespace hattn_bench
