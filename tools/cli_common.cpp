#include "cli_common.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "hattn/loki_prep.h"

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

Indices load_indices(const std::string& path, const char* name, size_t rank, const char* layout) {
  Indices a;
  std::string error;
  if (!hattn::npy::read_i32(path, &a.shape, &a.data, &error)) die(1, error);
  if (a.shape.size() != rank) {
    die(1, path + ": " + name + " must have rank " + std::to_string(rank) + " " + layout +
               ", got rank " + std::to_string(a.shape.size()));
  }
  return a;
}

hattn::TensorView view(hattn::npy::Array& a) {
  return hattn::TensorView::contiguous(a.data.data(), a.shape);
}

std::vector<float> cumulative_shares(const std::vector<float>& ratios, int64_t d) {
  std::vector<float> out(ratios.size());
  for (size_t row = 0; row < ratios.size(); row += static_cast<size_t>(d)) {
    double sum = 0;
    for (size_t c = row; c < row + static_cast<size_t>(d); ++c) {
      sum += ratios[c];
      out[c] = static_cast<float>(sum);
    }
  }
  return out;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string t = "[";
  for (size_t i = 0; i < shape.size(); ++i) t += (i ? ", " : "") + std::to_string(shape[i]);
  return t + "]";
}

LayerBasis load_basis(const std::string& path, int64_t layer) {
  LayerBasis b;
  std::string error;
  if (!hattn::npy::read_f32(path, &b.file, &error)) die(1, error);
  const std::vector<int64_t>& shape = b.file.shape;
  if (shape.size() == 4) {
    if (layer < 0 || layer >= shape[0]) {
      die(2, path + " holds " + std::to_string(shape[0]) + " layers " + shape_text(shape) +
                 "; choose one with --layer in [0, " + std::to_string(shape[0] - 1) + "]");
    }
    check(hattn::loki_basis_layer(view(b.file), layer, &b.view));
  } else if (shape.size() != 3) {
    die(1, path + ": basis must have rank 3 [Hkv, D, D] or 4 [L, Hkv, D, D], got rank " +
               std::to_string(shape.size()) + " " + shape_text(shape));
  } else if (layer >= 0) {
    die(2, "--layer needs a per-layer basis [L, Hkv, D, D]; " + path + " is " + shape_text(shape));
  } else {
    b.view = view(b.file);
  }
  return b;
}

void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream f(path);
  f << j.dump(1) << "\n";
  f.close();
  if (!f) die(1, "cannot write " + path);
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

void add_dtype_option(CLI::App* c, std::string* dtype, bool kv_forms) {
  std::string help =
      "f32 (default), bf16 or f16: the tensors' dtype in the call. Inputs: float32 or float16 "
      ".npy, rounded to the dtype in memory. Output: float16 .npy for f16, float32 .npy for f32 "
      "and bf16 (holding the bf16 values exactly)";
  std::vector<std::string> names = {"f32", "bf16", "f16"};
  if (kv_forms) {
    help += ". bf16kv, f16kv: q and out fp32 over k and v rounded to bf16 or f16 (decode)";
    names.insert(names.end(), {"bf16kv", "f16kv"});
  }
  c->add_option("--dtype", *dtype, help)->check(CLI::IsMember(names));
}

bool fp32_query(const std::string& name) {
  return name.size() > 2 && name.compare(name.size() - 2, 2, "kv") == 0;
}

hattn::DType parse_dtype(const std::string& name) {
  const std::string cache = fp32_query(name) ? name.substr(0, name.size() - 2) : name;
  return cache == "bf16"  ? hattn::DType::bf16
         : cache == "f16" ? hattn::DType::f16
                          : hattn::DType::f32;
}

hattn::TensorView as_dtype(const hattn::npy::Array& a, hattn::DType dtype,
                           std::vector<uint16_t>* bits) {
  if (dtype == hattn::DType::f32) return hattn::TensorView::contiguous(a.data.data(), a.shape);
  bits->resize(a.data.size());
  for (size_t i = 0; i < a.data.size(); ++i) (*bits)[i] = hattn::to_16bit(dtype, a.data[i]);
  return hattn::TensorView::contiguous(bits->data(), dtype, a.shape);
}

hattn::TensorView output_as(hattn::DType dtype, const std::vector<int64_t>& shape,
                            std::vector<float>* out, std::vector<uint16_t>* bits) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  out->resize(n);
  if (dtype == hattn::DType::f32) return hattn::TensorView::contiguous(out->data(), shape);
  bits->resize(n);
  return hattn::TensorView::contiguous(bits->data(), dtype, shape);
}

void widen(hattn::DType dtype, const std::vector<uint16_t>& bits, std::vector<float>* out) {
  if (dtype == hattn::DType::f32) return;
  for (size_t i = 0; i < bits.size(); ++i) (*out)[i] = hattn::from_16bit(dtype, bits[i]);
}

void save_output(const std::string& path, hattn::DType dtype, const std::vector<int64_t>& shape,
                 const std::vector<uint16_t>& bits, std::vector<float>* out) {
  if (dtype == hattn::DType::f16) {  // NumPy's float16: written natively
    std::string error;
    if (!hattn::npy::write_f16(path, shape, bits.data(), &error)) die(1, error);
    return;
  }
  widen(dtype, bits, out);  // bf16 (no NumPy dtype): float32 holding the bf16 values exactly
  save(path, shape, out->data());
}

size_t dtype_bytes(hattn::DType dtype) { return dtype == hattn::DType::f32 ? 4 : 2; }

void print_timing(const hattn::Dispatch& chosen, double seconds, int repeat, double flops,
                  double bytes) {
  std::printf("kernel: %s (%s", chosen.kernel.c_str(), chosen.reason.c_str());
  if (chosen.decode_splits > 1) std::printf(", %d key splits", chosen.decode_splits);
  std::printf(")\ntime: %.3f ms (median of %d), %.1f GFLOP/s", seconds * 1e3, repeat,
              flops / seconds * 1e-9);
  if (bytes > 0) std::printf(", %.1f GB/s", bytes / seconds * 1e-9);
  std::printf("\n");
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
