#include "cli_common.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace hattn_cli {

void die(int status, const std::string& message) {
  std::string line = message;
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::fprintf(stderr, "hattn: error: %s\n", line.c_str());
  throw Failure{status};
}

hattn::npy::Array load(const std::string& path, const char* name, size_t rank, const char* layout) {
  hattn::npy::Array a;
  std::string error;
  if (!hattn::npy::read_f32(path, &a, &error)) die(1, error);
  if (a.shape.size() != rank) {
    die(1, path + ": " + name + " must have rank " + std::to_string(rank) + " " + layout +
               ", got rank " + std::to_string(a.shape.size()));
  }
  return a;
}

void save(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  std::string error;
  if (!hattn::npy::write_f32(path, shape, data, &error)) die(1, error);
}

hattn::TensorView view(hattn::npy::Array& a) {
  return hattn::TensorView::contiguous(a.data.data(), a.shape);
}

void check(const hattn::Status& s) {
  if (!s.ok()) die(1, std::string(hattn::to_string(s.code)) + ": " + s.message);
}

void set_common(const CommonRunArgs& a, hattn::CallOptions* o) {
  o->kernel = a.kernel;
  o->check_finite = a.check_finite;
}

void set_scale(double scale, hattn::ScaledOptions* o) {
  if (scale != 0) {
    o->has_scale = true;
    o->scale = static_cast<float>(scale);
  }
}

void add_common_run_options(CLI::App* run, CommonRunArgs* a) {
  run->add_option("--kernel", a->kernel, "force a kernel by name (see `hattn list`)");
  run->add_option("--threads", a->threads, "worker threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  run->add_option("--repeat", a->repeat, "run N times and report the median time")
      ->check(CLI::PositiveNumber);
  run->add_flag("--check-finite", a->check_finite, "refuse inputs holding NaN or Inf");
  run->add_flag("-v,--verbose", a->verbose, "say more");
}

double median_seconds(int repeat, const std::function<hattn::Status()>& call) {
  std::vector<double> seconds;
  for (int r = 0; r < std::max(repeat, 1); ++r) {
    auto t0 = std::chrono::steady_clock::now();
    hattn::Status s = call();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    check(s);
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

double visible_pairs(int64_t lq, int64_t lk, bool causal) {
  if (!causal) return static_cast<double>(lq) * static_cast<double>(lk);
  double n = 0;
  for (int64_t i = 0; i < lq; ++i) {
    n += static_cast<double>(std::clamp<int64_t>(i + lk - lq + 1, 0, lk));
  }
  return n;
}

}  // namespace hattn_cli
