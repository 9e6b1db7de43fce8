// Argument validation for the public API: every refusal says which argument and why.
#pragma once

#include <string>
#include <vector>

#include "hattn/hattn.h"

namespace hattn {

// The sizes of an attention call ([B, Hq, Lq, D] queries over [B, Hkv, Lk, D] keys). Calls of
// other kinds (the FFN, el, the linear layer, the SparseK operator) have their own sizes and
// ask dispatch with a KernelRequest of their own (dispatch.h).
struct AttentionShape {
  int64_t batch = 0, q_heads = 0, kv_heads = 0, lq = 0, lk = 0, head_dim = 0;
  Device device = Device::cpu;  // where every tensor of the call lives
  DType dtype = DType::f32;     // the element type of q and out
  DType kv_dtype = DType::f32;  // of k and v: dtype, or bf16/f16 under an fp32 q and out
};

// The dtype as kernel names spell it: "f32", "bf16", "f16", or for fp32 activations (q and out;
// el's and linear's x and y) over 16-bit stored tensors (a K/V cache; weights and memory)
// "bf16kv", "f16kv".
std::string kernel_dtype(DType activations, DType stored);
std::string kernel_dtype(const AttentionShape& shape);

Status invalid(const std::string& message);

// "[1, 8, 2048, 64]": a shape for messages.
std::string shape_str(const std::vector<int64_t>& shape);
std::string shape_str(const TensorView& t);

// One view: rank, null pointer, dtype, device value, sizes, strides (innermost stride 1) and, for
// a `written` view, no self-aliasing. `dims` names each dimension for messages. any_dtype: bf16
// and f16 are accepted too, else fp32 only.
Status check_tensor(const TensorView& t, const char* name, int rank, const char* const* dims,
                    bool written, bool any_dtype = false);
// Whether the memory spans of two valid views intersect.
bool tensors_overlap(const TensorView& a, const TensorView& b);

// The scale (finite, > 0, when given) and decode_splits (>= 0) of an attention call.
Status check_attention_options(const AttentionOptions& options);

// The lse view a kernel writes: the caller's (options.lse), else this thread's scratch sized to
// [B, Hq, Lq] (the kernels always produce lse), valid until the thread's next call of this; kept
// per thread so that a decode call on a tiny cache allocates nothing for it.
TensorView lse_or_scratch(const AttentionOptions& options, const AttentionShape& shape);

// The lse output of an attention call: fp32, `shape` ([B, Hq, Lq]), on `device`, overlapping
// none of the n other tensors of the call.
Status check_lse(const TensorView& lse, const std::vector<int64_t>& shape, Device device,
                 const TensorView* const* others, int n);

// Checks q, k, v, out, options (and options.lse) and fills `shape`.
Status validate_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& out, const AttentionOptions& options,
                          AttentionShape* shape);

// validate_attention with the four tensors named for messages (e.g. Loki's "k_rot"); any_dtype:
// 16-bit tensors are accepted (one dtype for all four), else fp32 only.
Status validate_attention_named(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const AttentionOptions& options,
                                const char* const* names, AttentionShape* shape, bool any_dtype);

// The tensor and scale checks of validate_attention for a variant with CPU kernels only
// (`variant` names it in the refusal of device tensors; `names`, when given, the four tensors;
// `sixteen_bit`: the variant has bf16/f16 kernels, so those dtypes go on to its dispatch).
Status validate_cpu_attention(const char* variant, const TensorView& q, const TensorView& k,
                              const TensorView& v, const TensorView& out, bool causal,
                              const ScaledOptions& options, AttentionShape* shape,
                              const char* const* names = nullptr, bool sixteen_bit = false);

// The softmax scale of a call: the caller's when has_scale, else 1/sqrt(head_dim) computed in
// fp32 (the one default-scale rule of every variant; el passes its per-head dim Dm / heads).
float resolve_scale(const ScaledOptions& options, int64_t head_dim);

// Bytes per element of a dtype, and element `offset` of a view read as fp32 (16-bit widened).
size_t element_size(DType t);
float element_value(const TensorView& t, int64_t offset);
// The n contiguous elements of `t` from element `offset` as fp32: t's own memory when it is f32,
// else widened into `scratch` (resized to n).
const float* row_f32(const TensorView& t, int64_t offset, int64_t n, std::vector<float>* scratch);

// Refuses with non_finite_input, naming the tensor and the first bad index, if `t` holds a NaN
// or an infinity.
Status check_finite(const TensorView& t, const char* name);
// check_finite over n views.
Status finite_or_refuse(const TensorView* const* views, const char* const* names, int n);

// Refuses a count of kept items (`what`: "keys", "hidden units") below 1.
Status check_k(int64_t k, const char* what);

}  // namespace hattn
