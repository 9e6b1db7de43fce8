#include "validate.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <sstream>

namespace hattn {
namespace {

const char* const kDimNames4[4] = {"B", "H", "L", "D"};
constexpr int64_t kMaxElements = INT32_MAX;  // per view: element count and largest offset
const char* const kAttentionNames[4] = {"q", "k", "v", "out"};

// Byte range [lo, hi] a view touches (valid only after the view passed check_view).
struct ByteRange {
  uintptr_t lo, hi;
};

ByteRange byte_range(const TensorView& t) {
  int64_t last = 0;
  for (int i = 0; i < t.rank; ++i) last += (t.shape[i] - 1) * t.strides[i];
  auto base = reinterpret_cast<uintptr_t>(t.data);
  const auto size = static_cast<uintptr_t>(element_size(t.dtype));
  return {base, base + static_cast<uintptr_t>(last) * size + size - 1};
}

bool overlaps(const TensorView& a, const TensorView& b) {
  ByteRange x = byte_range(a), y = byte_range(b);
  return x.lo <= y.hi && y.lo <= x.hi;
}

// Two distinct indices of `t` address the same element (a written view must not).
bool self_overlapping(const TensorView& t) {
  // Dims by increasing stride (insertion sort over at most 4 entries).
  int order[4] = {0, 1, 2, 3};
  for (int a = 1; a < t.rank && a < 4; ++a) {
    for (int b = a; b > 0 && t.strides[order[b]] < t.strides[order[b - 1]]; --b) {
      std::swap(order[b], order[b - 1]);
    }
  }
  int64_t span = 1;  // elements covered by the dims sorted so far
  for (int n = 0; n < t.rank && n < 4; ++n) {
    int i = order[n];
    if (t.shape[i] == 1) continue;
    if (t.strides[i] < span) return true;
    span = t.strides[i] * t.shape[i];
  }
  return false;
}

// Rank, null, dtype, device, sizes and strides of one view. `written` views may not have zero
// strides or overlap themselves.
Status check_view(const TensorView& t, const char* name, int rank, const char* const* dims,
                  bool written, bool any_dtype = false) {
  std::ostringstream e;
  if (t.rank != rank) {
    e << name << " must have rank " << rank << " (";
    for (int i = 0; i < rank; ++i) e << (i ? ", " : "") << dims[i];
    e << "), got rank " << t.rank;
    return invalid(e.str());
  }
  if (t.data == nullptr) return invalid(std::string(name) + " has a null data pointer");
  if (t.dtype != DType::f32 && t.dtype != DType::bf16 && t.dtype != DType::f16) {
    return invalid(std::string(name) + " has an unknown dtype value " +
                   std::to_string(static_cast<int>(t.dtype)));
  }
  if (t.dtype != DType::f32 && !any_dtype) {
    return Status{
        StatusCode::unsupported,
        std::string(name) + " has dtype " + to_string(t.dtype) +
            "; this call has fp32 kernels only (16-bit tensors: attention(), paged_attention(), "
            "ragged_attention(), topk_attention(), loki_attention(), sparsek_attention(), "
            "SparsekDecoder, topk_ffn())"};
  }
  const size_t align = element_size(t.dtype);
  if (reinterpret_cast<uintptr_t>(t.data) % align != 0) {
    e << name << " data pointer " << t.data << " is misaligned: " << to_string(t.dtype)
      << " tensors must be aligned to " << align << " bytes";
    return invalid(e.str());
  }
  if (t.device != Device::cpu && t.device != Device::cuda) {
    return invalid(std::string(name) + " has an unknown device value " +
                   std::to_string(static_cast<int>(t.device)));
  }
  int64_t elements = 1;
  for (int i = 0; i < rank; ++i) {
    if (t.shape[i] <= 0) {
      e << name << " has " << (t.shape[i] == 0 ? "a zero-size" : "a negative") << " dimension "
        << dims[i] << " = " << t.shape[i] << " (" << t.describe()
        << "); hattn refuses empty tensors";
      return invalid(e.str());
    }
    if (t.shape[i] > INT32_MAX) {
      e << name << " dimension " << dims[i] << " = " << t.shape[i] << " exceeds 2^31-1";
      return invalid(e.str());
    }
    if (t.strides[i] < 0 || t.strides[i] > INT32_MAX) {
      e << name << " stride of " << dims[i] << " = " << t.strides[i]
        << " is not supported (strides must be in [0, 2^31-1])";
      return invalid(e.str());
    }
    // Each factor is < 2^31 here, so the product can only overflow after exceeding the limit.
    if (elements <= kMaxElements) elements *= t.shape[i];
  }
  // The kernels index with 32-bit arithmetic (Halide targets without large_buffers): refuse
  // before anything runs rather than let an offset wrap.
  int64_t last = 0;
  for (int i = 0; i < rank && last <= kMaxElements; ++i) last += (t.shape[i] - 1) * t.strides[i];
  if (elements > kMaxElements || last > kMaxElements) {
    e << name << " " << t.describe() << " has "
      << (elements > kMaxElements
              ? "more than 2^31-1 elements"
              : "an element offset beyond 2^31-1 (" + std::to_string(last) + ")")
      << "; hattn's kernels index with 32 bits (split the call, e.g. over B or H)";
    return invalid(e.str());
  }
  if (t.strides[rank - 1] != 1) {
    e << name << " must be contiguous in its last dimension " << dims[rank - 1]
      << " (stride 1), got " << t.describe();
    return invalid(e.str());
  }
  if (written && self_overlapping(t)) {
    e << name << " is written but its strides make elements alias each other (" << t.describe()
      << ")";
    return invalid(e.str());
  }
  return Status::success();
}

}  // namespace

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < shape.size(); ++i) o << (i ? ", " : "") << shape[i];
  o << "]";
  return o.str();
}

std::string shape_str(const TensorView& t) {
  return shape_str(std::vector<int64_t>(t.shape, t.shape + t.rank));
}

Status check_tensor(const TensorView& t, const char* name, int rank, const char* const* dims,
                    bool written, bool any_dtype) {
  return check_view(t, name, rank, dims, written, any_dtype);
}

bool tensors_overlap(const TensorView& a, const TensorView& b) { return overlaps(a, b); }

Status invalid(const std::string& message) { return Status{StatusCode::invalid_argument, message}; }

TensorView lse_or_scratch(const AttentionOptions& options, const AttentionShape& shape) {
  if (options.lse != nullptr) return *options.lse;
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(shape.batch * shape.q_heads * shape.lq));
  return TensorView::contiguous(scratch.data(), {shape.batch, shape.q_heads, shape.lq});
}

Status check_attention_options(const AttentionOptions& options) {
  if (options.has_scale && !(options.scale > 0.f && std::isfinite(options.scale))) {
    return invalid("scale must be finite and > 0, got " + std::to_string(options.scale));
  }
  if (options.decode_splits < 0) {
    return invalid("decode_splits must be >= 0 (0 = automatic), got " +
                   std::to_string(options.decode_splits));
  }
  return Status::success();
}

Status check_lse(const TensorView& lse, const std::vector<int64_t>& shape, Device device,
                 const TensorView* const* others, int n) {
  static const char* const kLseDims[3] = {"B", "H", "L"};
  Status s = check_view(lse, "lse", 3, kLseDims, true, true);
  if (!s.ok()) return s;
  if (lse.dtype != DType::f32) {
    return invalid(std::string("lse has dtype ") + to_string(lse.dtype) +
                   "; lse is fp32 whatever the dtype of q, k, v and out");
  }
  if (std::vector<int64_t>(lse.shape, lse.shape + 3) != shape) {
    return invalid("lse must have shape [B, Hq, Lq] = " + shape_str(shape) + ", got " +
                   shape_str(lse));
  }
  for (int i = 0; i < n; ++i) {
    if (overlaps(lse, *others[i])) return invalid("lse overlaps another tensor in memory");
  }
  if (lse.device != device) {
    return invalid(std::string("lse is on ") + to_string(lse.device) + " but q is on " +
                   to_string(device) + "; every tensor of a call must be on one device");
  }
  return Status::success();
}

Status validate_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& out, const AttentionOptions& options,
                          AttentionShape* shape) {
  return validate_attention_named(q, k, v, out, options, kAttentionNames, shape, true);
}

Status validate_attention_named(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const AttentionOptions& options,
                                const char* const* names, AttentionShape* shape, bool any_dtype) {
  const TensorView* views[] = {&q, &k, &v, &out};
  for (int n = 0; n < 4; ++n) {
    Status s = check_view(*views[n], names[n], 4, kDimNames4, n == 3, any_dtype);
    if (!s.ok()) return s;
  }
  // q and out share one dtype and k and v another: the same, or (decode, as inference engines
  // keep them) an fp32 q and out over a bf16 or f16 cache.
  const bool mixed = any_dtype && q.dtype == DType::f32 && k.dtype != DType::f32;
  for (int n = 1; n < 4; ++n) {
    const DType want = (n == 3 || !mixed) ? q.dtype : k.dtype;
    if (views[n]->dtype != want) {
      return invalid(std::string("q has dtype ") + to_string(q.dtype) + " but " + names[n] +
                     " has " + to_string(views[n]->dtype) +
                     "; q, k, v and out of a call share one dtype (or q and out are f32 over a "
                     "bf16 or f16 k and v)");
    }
  }
  for (int n = 1; n < 4; ++n) {
    if (views[n]->device != q.device) {
      return invalid(std::string("q is on ") + to_string(q.device) + " but " + names[n] +
                     " is on " + to_string(views[n]->device) +
                     "; every tensor of a call must be on one device");
    }
  }
  const std::string kn = names[1];
  if (q.shape[3] != k.shape[3] || q.shape[3] != v.shape[3]) {
    return invalid("head dim D differs: q " + shape_str(q) + ", " + kn + " " + shape_str(k) +
                   ", v " + shape_str(v));
  }
  for (int i = 0; i < 4; ++i) {
    if (k.shape[i] != v.shape[i]) {
      return invalid(kn + " and v must have the same shape, got " + kn + " " + shape_str(k) +
                     " and v " + shape_str(v));
    }
    if (out.shape[i] != q.shape[i]) {
      return invalid("out must have q's shape " + shape_str(q) + ", got " + shape_str(out));
    }
  }
  if (q.shape[0] != k.shape[0]) {
    return invalid("batch B differs: q " + shape_str(q) + ", " + kn + " " + shape_str(k));
  }
  if (q.shape[1] % k.shape[1] != 0) {
    return invalid("query heads Hq = " + std::to_string(q.shape[1]) +
                   " must be a multiple of key/value heads Hkv = " + std::to_string(k.shape[1]));
  }
  for (int n = 0; n < 3; ++n) {
    if (overlaps(out, *views[n])) {
      return invalid(std::string("out overlaps ") + names[n] +
                     " in memory; the output must not alias an input");
    }
  }
  Status so = check_attention_options(options);
  if (!so.ok()) return so;
  if (options.lse != nullptr) {
    Status s = check_lse(*options.lse, {q.shape[0], q.shape[1], q.shape[2]}, q.device, views, 4);
    if (!s.ok()) return s;
  }
  if (options.check_finite && q.device != Device::cpu) {
    return Status{StatusCode::unsupported,
                  "check_finite scans host memory and is not available for CUDA tensors"};
  }
  *shape = {q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2],
            q.shape[3], q.device,   q.dtype,    k.dtype};
  return Status::success();
}

std::string kernel_dtype(DType activations, DType stored) {
  if (stored == activations) return to_string(activations);
  return std::string(to_string(stored)) + "kv";
}

std::string kernel_dtype(const AttentionShape& shape) {
  return kernel_dtype(shape.dtype, shape.kv_dtype);
}

Status check_finite(const TensorView& t, const char* name) {
  // Walk every element of a rank-1..4 view: idx counts in row-major order.
  int64_t idx[4] = {0, 0, 0, 0};
  const int last = t.rank - 1;
  for (;;) {
    int64_t row = 0;
    for (int i = 0; i < last; ++i) row += idx[i] * t.strides[i];
    for (int64_t x = 0; x < t.shape[last]; ++x) {
      const float value = element_value(t, row + x);
      if (!std::isfinite(value)) {
        std::ostringstream e;
        e << name << " holds a non-finite value (" << value << ") at [";
        for (int i = 0; i < last; ++i) e << idx[i] << ", ";
        e << x << "]";
        return Status{StatusCode::non_finite_input, e.str()};
      }
    }
    int i = last - 1;
    while (i >= 0 && ++idx[i] == t.shape[i]) idx[i--] = 0;
    if (i < 0) break;
  }
  return Status::success();
}

Status finite_or_refuse(const TensorView* const* views, const char* const* names, int n) {
  for (int i = 0; i < n; ++i) {
    Status s = check_finite(*views[i], names[i]);
    if (!s.ok()) return s;
  }
  return Status::success();
}

Status check_k(int64_t k, const char* what) {
  if (k < 1) {
    return invalid(std::string("k (") + what + " kept per row) must be >= 1, got " +
                   std::to_string(k));
  }
  return Status::success();
}

Status validate_cpu_attention(const char* variant, const TensorView& q, const TensorView& k,
                              const TensorView& v, const TensorView& out, bool causal,
                              const ScaledOptions& options, AttentionShape* shape,
                              const char* const* names, bool sixteen_bit) {
  AttentionOptions as_dense;
  as_dense.causal = causal;
  as_dense.has_scale = options.has_scale;
  as_dense.scale = options.scale;
  Status s = validate_attention_named(q, k, v, out, as_dense, names ? names : kAttentionNames,
                                      shape, sixteen_bit);
  if (s.ok() && shape->device != Device::cpu) {
    return Status{StatusCode::unsupported, std::string(variant) +
                                               " attention has CPU kernels only; tensors are on " +
                                               to_string(shape->device)};
  }
  return s;
}

size_t element_size(DType t) { return t == DType::f32 ? sizeof(float) : sizeof(uint16_t); }

float element_value(const TensorView& t, int64_t offset) {
  if (t.dtype == DType::f32) return static_cast<const float*>(t.data)[offset];
  return from_16bit(t.dtype, static_cast<const uint16_t*>(t.data)[offset]);
}

const float* row_f32(const TensorView& t, int64_t offset, int64_t n, std::vector<float>* scratch) {
  if (t.dtype == DType::f32) return static_cast<const float*>(t.data) + offset;
  scratch->resize(static_cast<size_t>(n));
  const auto* bits = static_cast<const uint16_t*>(t.data) + offset;
  for (int64_t i = 0; i < n; ++i) (*scratch)[static_cast<size_t>(i)] = from_16bit(t.dtype, bits[i]);
  return scratch->data();
}

float resolve_scale(const ScaledOptions& options, int64_t head_dim) {
  return options.has_scale ? options.scale : 1.f / std::sqrt(static_cast<float>(head_dim));
}

}  // namespace hattn
