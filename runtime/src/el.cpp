// EL-attention and the standard multi-head path, on the CPU: validation, the workspace for the
// projected queries and the per-head outputs, and the kernel calls (linear, el, attention()).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "dispatch.h"
#include "halide_glue.h"
#include "hattn/hattn.h"
#include "validate.h"

namespace hattn {

namespace {

const char* const kRows3[3] = {"rows", "T", "Dm"};
const char* const kMem3[3] = {"B", "N", "Dm"};
const char* const kWeight2[2] = {"out", "in"};
const char* const kBias1[1] = {"Dm"};
const char* const kWeightNames[8] = {"wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"};

// EL's model-dimension tiles are 64 floats wide (schedules/cpu/el_cpu.cpp, shifted inwards at
// the edge), so Dm must be at least that; and the kernels' reductions over Dm are written for a
// multiple of 16 (generators/register_el.cpp), which every transformer width is.
constexpr int64_t kMinModelDim = 64;
constexpr int64_t kModelDimMultiple = 16;

const TensorView* weight_views(const MhaWeights& w, int i) {
  const TensorView* all[8] = {&w.wq, &w.bq, &w.wk, &w.bk, &w.wv, &w.bv, &w.wo, &w.bo};
  return all[i];
}

// The weights (and the biases given) share one dtype, f32, bf16 or f16: *dtype. Over 16-bit
// weights the kernels keep every activation fp32 (the bf16kv and f16kv kernels).
Status check_weights(const MhaWeights& w, int64_t dm, DType* dtype) {
  *dtype = w.wq.dtype;
  for (int i = 0; i < 8; ++i) {
    const TensorView& t = *weight_views(w, i);
    const bool bias = i % 2 == 1;
    if (bias && t.rank == 0) continue;  // no bias
    Status s = bias ? check_tensor(t, kWeightNames[i], 1, kBias1, false, /*any_dtype=*/true)
                    : check_tensor(t, kWeightNames[i], 2, kWeight2, false, /*any_dtype=*/true);
    if (!s.ok()) return s;
    if (t.dtype != *dtype) {
      return invalid(std::string("the weights and biases share one dtype: wq is ") +
                     to_string(*dtype) + ", " + kWeightNames[i] + " is " + to_string(t.dtype));
    }
    if (t.device != Device::cpu) {
      return Status{
          StatusCode::unsupported,
          "el and the standard MHA path have CPU kernels only; weights must be on the CPU"};
    }
    if (t.shape[0] != dm || (!bias && t.shape[1] != dm)) {
      return invalid(std::string(kWeightNames[i]) + " must be " +
                     (bias ? shape_str({dm}) : shape_str({dm, dm})) +
                     " for Dm=" + std::to_string(dm) + ", got " + shape_str(t));
    }
  }
  return Status::success();
}

// An activation (x, y, memory) is fp32 or in the weights' dtype `w` (read widened, written
// rounded once).
Status check_activation_dtype(const TensorView& t, const char* name, DType w) {
  if (t.dtype == DType::f32 || t.dtype == w) return Status::success();
  return invalid(std::string(name) + " has dtype " + to_string(t.dtype) +
                 "; activations are f32 or the weights' dtype (" + to_string(w) + ")");
}

// A [*, *, Dm] tensor of any dtype (its relation to the weights' is checked apart);
// `fp32_only`: a standard-path cache, which holds fp32 projections.
Status check_rows3(const TensorView& t, const char* name, const char* const* dims, bool written,
                   bool fp32_only = false) {
  Status s = check_tensor(t, name, 3, dims, written, /*any_dtype=*/true);
  if (!s.ok()) return s;
  if (fp32_only && t.dtype != DType::f32) {
    return Status{StatusCode::unsupported,
                  std::string(name) + " has dtype " + to_string(t.dtype) +
                      "; the standard path's caches hold fp32 projections (over weights of any "
                      "dtype)"};
  }
  if (t.device != Device::cpu) {
    return Status{StatusCode::unsupported,
                  std::string("el and the standard MHA path have CPU kernels only; ") + name +
                      " is on " + to_string(t.device)};
  }
  return Status::success();
}

// Checks everything el_attention and mha_attention_cached share: x, y, weights, heads, beam,
// scale and key lengths against a memory (or cache) of `samples` x `mem_len` rows.
Status check_common(const TensorView& x, const TensorView& y, const MhaWeights& w,
                    const ElOptions& o, int64_t samples, int64_t mem_len, int64_t dm) {
  Status s = check_rows3(x, "x", kRows3, false);
  if (!s.ok()) return s;
  s = check_rows3(y, "y", kRows3, true);
  if (!s.ok()) return s;
  if (x.shape[2] != dm) {
    return invalid("model dim Dm differs: x " + shape_str(x) +
                   ", memory has Dm=" + std::to_string(dm));
  }
  for (int i = 0; i < 3; ++i) {
    if (y.shape[i] != x.shape[i]) {
      return invalid("y must have x's shape " + shape_str(x) + ", got " + shape_str(y));
    }
  }
  DType wd = DType::f32;
  s = check_weights(w, dm, &wd);
  if (s.ok()) s = check_activation_dtype(x, "x", wd);
  if (s.ok()) s = check_activation_dtype(y, "y", wd);
  if (!s.ok()) return s;
  if (dm % kModelDimMultiple != 0) {
    return Status{StatusCode::unsupported,
                  "model dim Dm=" + std::to_string(dm) + " is not a multiple of " +
                      std::to_string(kModelDimMultiple) +
                      " (the linear and el kernels reduce over Dm in 16-float steps)"};
  }
  if (o.heads < 1) return invalid("heads must be >= 1, got " + std::to_string(o.heads));
  if (dm % o.heads != 0) {
    return invalid("Dm=" + std::to_string(dm) +
                   " is not divisible by heads=" + std::to_string(o.heads));
  }
  if (o.beam < 1) return invalid("beam must be >= 1, got " + std::to_string(o.beam));
  if (x.shape[0] % o.beam != 0) {
    return invalid("x has " + std::to_string(x.shape[0]) + " rows, not divisible by beam=" +
                   std::to_string(o.beam) + " (x is [B * beam, T, Dm])");
  }
  if (x.shape[0] / o.beam != samples) {
    return invalid("x has " + std::to_string(x.shape[0]) +
                   " rows = " + std::to_string(x.shape[0] / o.beam) + " samples x beam " +
                   std::to_string(o.beam) + ", but the memory has B=" + std::to_string(samples));
  }
  if (o.has_scale && !(o.scale > 0.f && std::isfinite(o.scale))) {
    return invalid("scale must be positive and finite, got " + std::to_string(o.scale));
  }
  if (o.key_lengths != nullptr) {
    for (int64_t b = 0; b < samples; ++b) {
      if (o.key_lengths[b] < 0 || o.key_lengths[b] > mem_len) {
        return invalid("key_lengths[" + std::to_string(b) +
                       "] = " + std::to_string(o.key_lengths[b]) +
                       " is outside [0, N=" + std::to_string(mem_len) + "]");
      }
    }
  }
  if (tensors_overlap(y, x)) return invalid("y overlaps x in memory");
  for (int i = 0; i < 8; ++i) {
    const TensorView& t = *weight_views(w, i);
    if (t.rank != 0 && tensors_overlap(y, t)) {
      return invalid(std::string("y overlaps ") + kWeightNames[i] + " in memory");
    }
  }
  return Status::success();
}

float scale_of(const ElOptions& o, int64_t dm) { return resolve_scale(o, dm / o.heads); }

Status refuse_non_finite(const TensorView& x, const TensorView& mem, const char* mem_name,
                         const MhaWeights& w) {
  Status s = check_finite(x, "x");
  if (!s.ok()) return s;
  s = check_finite(mem, mem_name);
  if (!s.ok()) return s;
  for (int i = 0; i < 8; ++i) {
    const TensorView& t = *weight_views(w, i);
    if (t.rank == 0) continue;
    s = check_finite(t, kWeightNames[i]);
    if (!s.ok()) return s;
  }
  return Status::success();
}

// A [rows, T, Dm] view as an fp32 [rows * T, Dm] one: itself when it is fp32 and its strides
// allow, else a contiguous fp32 copy (inputs: 16-bit values widened) or a contiguous fp32 buffer
// that finish() copies back (outputs: rounded once to a 16-bit view's dtype).
class Rows2D {
 public:
  Rows2D(const TensorView& t, bool written) : src_(t), written_(written) {
    const int64_t rows = t.shape[0] * t.shape[1];
    int64_t row_stride = 0;  // 0: not fp32, or not expressible as one stride
    const bool f32 = t.dtype == DType::f32;
    if (f32 && t.shape[1] == 1) {
      row_stride = t.strides[0];
    } else if (f32 && (t.shape[0] == 1 || t.strides[0] == t.shape[1] * t.strides[1])) {
      row_stride = t.strides[1];
    }
    if (row_stride > 0) {
      view_ = TensorView::strided(static_cast<float*>(t.data), {rows, t.shape[2]}, {row_stride, 1});
      return;
    }
    copy_.resize(static_cast<size_t>(rows * t.shape[2]));
    view_ = TensorView::contiguous(copy_.data(), {rows, t.shape[2]});
    if (!written) walk(true);
  }
  const TensorView& view() const { return view_; }
  void finish() {
    if (written_ && !copy_.empty()) walk(false);
  }

 private:
  void walk(bool in) {
    const int64_t dm = src_.shape[2];
    const bool f32 = src_.dtype == DType::f32;
    for (int64_t r = 0; r < src_.shape[0]; ++r) {
      for (int64_t t = 0; t < src_.shape[1]; ++t) {
        const int64_t at = r * src_.strides[0] + t * src_.strides[1];
        float* c = copy_.data() + (r * src_.shape[1] + t) * dm;
        if (f32) {
          float* p = static_cast<float*>(src_.data) + at;
          std::memcpy(in ? c : p, in ? p : c, static_cast<size_t>(dm) * sizeof(float));
          continue;
        }
        uint16_t* p = static_cast<uint16_t*>(src_.data) + at;
        for (int64_t m = 0; m < dm; ++m) {
          if (in) {
            c[m] = from_16bit(src_.dtype, p[m]);
          } else {
            p[m] = to_16bit(src_.dtype, c[m]);
          }
        }
      }
    }
  }
  TensorView src_;
  bool written_;
  std::vector<float> copy_;
  TensorView view_;
};

// el and linear have one kernel per family and weight dtype (mask, beam and sizes are run-time
// arguments): f32, or bf16kv / f16kv (fp32 activations over 16-bit weights and memory).
template <typename Fn>
Status find_kernel(const std::string& forced, DType weights, Kernel<Fn>* kernel) {
  KernelRequest request;
  request.forced = forced;
  request.dtype = kernel_dtype(DType::f32, weights);
  std::string reason;
  return choose_kernel(request, kernel, &reason);
}

// `bias`, or (a missing bias, rank 0) a view of `n` zeros of `dtype` held in `zeros` (all-zero
// bits are +0 in every dtype).
TensorView bias_or_zeros(const TensorView& bias, int64_t n, DType dtype,
                         std::vector<float>* zeros) {
  if (bias.rank != 0) return bias;
  zeros->assign(static_cast<size_t>(n), 0.f);
  return TensorView::contiguous(zeros->data(), dtype, {n});
}

// y2d = scale * (x2d W^T + bias) through the linear kernel of W's dtype (x2d, y2d fp32); a
// missing bias is zero.
Status run_linear(const TensorView& x2d, const TensorView& w, const TensorView& bias, float scale,
                  const TensorView& y2d) {
  Kernel<hattn_linear_fn> kernel;
  Status s = find_kernel("", w.dtype, &kernel);
  if (!s.ok()) return s;
  std::vector<float> zeros;
  const TensorView b = bias_or_zeros(bias, w.shape[0], w.dtype, &zeros);
  HalideBuffer xb(x2d), wb(w), bb(b), yb(y2d);
  return kernel.call(xb, wb, bb, scale, yb);
}

// Per-sample visible lengths, as the kernel's int32 [B].
std::vector<int32_t> visible_lengths(const ElOptions& o, int64_t samples, int64_t mem_len) {
  std::vector<int32_t> values(static_cast<size_t>(samples));
  for (int64_t b = 0; b < samples; ++b) {
    values[static_cast<size_t>(b)] =
        o.key_lengths != nullptr ? o.key_lengths[b] : static_cast<int32_t>(mem_len);
  }
  return values;
}

}  // namespace

Status el_attention(const TensorView& x, const TensorView& memory, const MhaWeights& weights,
                    const TensorView& y, const ElOptions& options, Dispatch* chosen) {
  Status s = check_rows3(memory, "memory", kMem3, false);
  if (!s.ok()) return s;
  const int64_t dm = memory.shape[2], samples = memory.shape[0], mem_len = memory.shape[1];
  s = check_common(x, y, weights, options, samples, mem_len, dm);
  if (!s.ok()) return s;
  // The kernel reads the memory as it reads Wk and Wv: in their dtype.
  if (memory.dtype != weights.wq.dtype) {
    return invalid(std::string("el reads the memory in the weights' dtype (") +
                   to_string(weights.wq.dtype) + "); memory is " + to_string(memory.dtype));
  }
  if (tensors_overlap(y, memory)) {
    return invalid("y overlaps memory (the memory tensor); the output must not alias an input");
  }
  if (dm < kMinModelDim) {
    return Status{StatusCode::unsupported,
                  "el kernels need Dm >= " + std::to_string(kMinModelDim) +
                      " (their model-dimension tiles are that wide), got Dm=" + std::to_string(dm) +
                      "; use mha_attention"};
  }
  Kernel<hattn_el_fn> kernel;
  s = find_kernel(options.kernel, weights.wq.dtype, &kernel);
  if (!s.ok()) return s;
  if (options.check_finite) {
    s = refuse_non_finite(x, memory, "memory", weights);
    if (!s.ok()) return s;
  }
  if (chosen != nullptr) {
    *chosen = Dispatch{kernel.name(),
                       "B=" + std::to_string(samples) + " beam=" + std::to_string(options.beam) +
                           " T=" + std::to_string(x.shape[1]) + " N=" + std::to_string(mem_len) +
                           " Dm=" + std::to_string(dm) + " H=" + std::to_string(options.heads),
                       1};
  }

  const int64_t rows = x.shape[0], tokens = x.shape[1];
  std::vector<float> q(static_cast<size_t>(rows * tokens * dm));
  std::vector<float> heads_out(q.size());
  Rows2D x2(x, false);
  const TensorView q2 = TensorView::contiguous(q.data(), {rows * tokens, dm});
  s = run_linear(x2.view(), weights.wq, weights.bq, scale_of(options, dm), q2);
  if (!s.ok()) return s;

  std::vector<float> zero_bias;
  const TensorView bv = bias_or_zeros(weights.bv, dm, weights.wq.dtype, &zero_bias);
  std::vector<int32_t> lengths = visible_lengths(options, samples, mem_len);
  HalideBuffer qb(q.data(), {rows, tokens, dm}), ob(heads_out.data(), {rows, tokens, dm});
  HalideBuffer hb(memory), wkb(weights.wk), wvb(weights.wv), bvb(bv), lb(lengths.data(), {samples});
  s = kernel.call(qb, hb, wkb, wvb, bvb, lb, static_cast<int32_t>(options.heads),
                  static_cast<int32_t>(options.beam), options.causal, ob);
  if (!s.ok()) return s;

  Rows2D y2(y, true);
  s = run_linear(TensorView::contiguous(heads_out.data(), {rows * tokens, dm}), weights.wo,
                 weights.bo, 1.f, y2.view());
  if (!s.ok()) return s;
  y2.finish();
  return Status::success();
}

Status mha_project_memory(const TensorView& memory, const MhaWeights& weights,
                          const TensorView& k_cache, const TensorView& v_cache) {
  DType wd = DType::f32;
  Status s = check_rows3(memory, "memory", kMem3, false);
  if (!s.ok()) return s;
  const int64_t dm = memory.shape[2];
  s = check_weights(weights, dm, &wd);
  if (s.ok()) s = check_activation_dtype(memory, "memory", wd);
  if (!s.ok()) return s;
  if (dm % kModelDimMultiple != 0) {
    return Status{StatusCode::unsupported,
                  "model dim Dm=" + std::to_string(dm) + " is not a multiple of " +
                      std::to_string(kModelDimMultiple) +
                      " (the linear kernel reduces over Dm in 16-float steps)"};
  }
  const TensorView* caches[2] = {&k_cache, &v_cache};
  const char* names[2] = {"k_cache", "v_cache"};
  for (int i = 0; i < 2; ++i) {
    s = check_rows3(*caches[i], names[i], kMem3, true, /*fp32_only=*/true);
    if (!s.ok()) return s;
    for (int d = 0; d < 3; ++d) {
      if (caches[i]->shape[d] != memory.shape[d]) {
        return invalid(std::string(names[i]) + " must have memory's shape " + shape_str(memory) +
                       ", got " + shape_str(*caches[i]));
      }
    }
    if (tensors_overlap(*caches[i], memory))
      return invalid(std::string(names[i]) + " overlaps memory (the memory tensor)");
  }
  if (tensors_overlap(k_cache, v_cache)) return invalid("k_cache and v_cache overlap in memory");
  Rows2D m2(memory, false);
  for (int i = 0; i < 2; ++i) {
    Rows2D c2(*caches[i], true);
    s = run_linear(m2.view(), i == 0 ? weights.wk : weights.wv, i == 0 ? weights.bk : weights.bv,
                   1.f, c2.view());
    if (!s.ok()) return s;
    c2.finish();
  }
  return Status::success();
}

Status mha_attention_cached(const TensorView& x, const TensorView& k_cache,
                            const TensorView& v_cache, const MhaWeights& weights,
                            const TensorView& y, const ElOptions& options) {
  Status s = check_rows3(k_cache, "k_cache", kMem3, false, /*fp32_only=*/true);
  if (!s.ok()) return s;
  s = check_rows3(v_cache, "v_cache", kMem3, false, /*fp32_only=*/true);
  if (!s.ok()) return s;
  for (int d = 0; d < 3; ++d) {
    if (k_cache.shape[d] != v_cache.shape[d]) {
      return invalid("k_cache and v_cache must have the same shape, got " + shape_str(k_cache) +
                     " and " + shape_str(v_cache));
    }
  }
  const int64_t dm = k_cache.shape[2], mem_len = k_cache.shape[1], cache_b = k_cache.shape[0];
  if (options.beam < 1) return invalid("beam must be >= 1, got " + std::to_string(options.beam));
  const bool per_beam = cache_b == x.shape[0] && options.beam > 1;
  const int64_t samples = per_beam ? cache_b / options.beam : cache_b;
  s = check_common(x, y, weights, options, samples, mem_len, dm);
  if (!s.ok()) return s;
  if (!per_beam && options.beam > 1 && options.causal) {
    return invalid(
        "a causal call with beam > 1 needs one cache per beam ([B * beam, N, Dm]): "
        "a shared cache folds the beams into one query block");
  }
  if (options.check_finite) {
    s = refuse_non_finite(x, k_cache, "k_cache", weights);
    if (!s.ok()) return s;
    s = check_finite(v_cache, "v_cache");
    if (!s.ok()) return s;
  }

  const int64_t rows = x.shape[0], tokens = x.shape[1], h = options.heads, dh = dm / h;
  std::vector<float> q(static_cast<size_t>(rows * tokens * dm));
  std::vector<float> att(q.size());
  Rows2D x2(x, false);
  s = run_linear(x2.view(), weights.wq, weights.bq, scale_of(options, dm),
                 TensorView::contiguous(q.data(), {rows * tokens, dm}));
  if (!s.ok()) return s;

  // Query rows per cache entry: one beam's T tokens, or (shared cache) all beams' tokens.
  const int64_t group = per_beam ? 1 : options.beam;
  const int64_t lq = group * tokens;
  AttentionOptions ao;
  ao.causal = options.causal;
  ao.has_scale = true;
  ao.scale = 1.f;  // q is already scaled
  ao.kernel = options.kernel;
  const int64_t entries = cache_b;
  // Without padding one call covers every cache entry; with it, one call per entry.
  const int64_t per_call = options.key_lengths != nullptr ? 1 : entries;
  for (int64_t e0 = 0; e0 < entries; e0 += per_call) {
    const int64_t sample = per_beam ? e0 / options.beam : e0;
    const int64_t len = options.key_lengths != nullptr ? options.key_lengths[sample] : mem_len;
    float* qp = q.data() + e0 * lq * dm;
    float* ap = att.data() + e0 * lq * dm;
    if (len == 0) {
      std::fill(ap, ap + per_call * lq * dm, 0.f);
      continue;
    }
    const TensorView qv = TensorView::strided(qp, {per_call, h, lq, dh}, {lq * dm, dh, dm, 1});
    const TensorView av = TensorView::strided(ap, {per_call, h, lq, dh}, {lq * dm, dh, dm, 1});
    const float* kp = static_cast<const float*>(k_cache.data) + e0 * k_cache.strides[0];
    const float* vp = static_cast<const float*>(v_cache.data) + e0 * v_cache.strides[0];
    const TensorView kv = TensorView::strided(kp, {per_call, h, len, dh},
                                              {k_cache.strides[0], dh, k_cache.strides[1], 1});
    const TensorView vv = TensorView::strided(vp, {per_call, h, len, dh},
                                              {v_cache.strides[0], dh, v_cache.strides[1], 1});
    s = attention(qv, kv, vv, av, ao);
    if (!s.ok()) return s;
  }
  Rows2D y2(y, true);
  s = run_linear(TensorView::contiguous(att.data(), {rows * tokens, dm}), weights.wo, weights.bo,
                 1.f, y2.view());
  if (!s.ok()) return s;
  y2.finish();
  return Status::success();
}

Status mha_attention(const TensorView& x, const TensorView& memory, const MhaWeights& weights,
                     const TensorView& y, const ElOptions& options) {
  // The memory's dtype is checked against the weights' by mha_project_memory.
  Status s = check_rows3(memory, "memory", kMem3, false);
  if (!s.ok()) return s;
  const int64_t samples = memory.shape[0], mem_len = memory.shape[1], dm = memory.shape[2];
  std::vector<float> kc(static_cast<size_t>(samples * mem_len * dm)), vc(kc.size());
  const TensorView kv = TensorView::contiguous(kc.data(), {samples, mem_len, dm});
  const TensorView vv = TensorView::contiguous(vc.data(), {samples, mem_len, dm});
  s = mha_project_memory(memory, weights, kv, vv);
  if (!s.ok()) return s;
  if (!(options.causal && options.beam > 1))
    return mha_attention_cached(x, kv, vv, weights, y, options);
  // Causal beams need a cache each: replicate the sample's cache per beam.
  const int64_t beam = options.beam, per = mem_len * dm;
  std::vector<float> kb(static_cast<size_t>(samples * beam * per)), vb(kb.size());
  for (int64_t e = 0; e < samples * beam; ++e) {
    std::copy(kc.begin() + (e / beam) * per, kc.begin() + (e / beam + 1) * per,
              kb.begin() + e * per);
    std::copy(vc.begin() + (e / beam) * per, vc.begin() + (e / beam + 1) * per,
              vb.begin() + e * per);
  }
  return mha_attention_cached(x, TensorView::contiguous(kb.data(), {samples * beam, mem_len, dm}),
                              TensorView::contiguous(vb.data(), {samples * beam, mem_len, dm}),
                              weights, y, options);
}

}  // namespace hattn
