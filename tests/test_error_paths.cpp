// Every error return of the runtime (runtime/src), triggered through the public API with its
// message asserted: one table row per error site. A guard test counts the error constructors
// in the sources (invalid(...), Status{StatusCode::...}, the C interface's `*err =`) per file
// and fails when a site has neither a row here nor an entry in kUnreachable with the reason,
// so a new error path cannot go untested. (loki_prep.cpp, in hattn_loki_prep, is covered by
// test_loki_prep's LokiErrors fixture and not counted here.)
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "HalideRuntime.h"
#include "hattn/hattn.h"
#include "hattn/hattn_c.h"
#include "hattn/loki_prep.h"
#include "test_support.h"
#include "variants.h"

namespace hattn_test {
namespace {

using hattn::Device;
using hattn::DType;
using hattn::Status;
using hattn::StatusCode;
using hattn::TensorView;

// el and the standard MHA path: Dm = 64 (2 heads), T = 3 query tokens, N = 5 memory rows.
// x2 and y2 hold two rows (B * beam = 2 over the memory's B = 1). Weights [1, Dm, Dm] and
// biases [1, 1, Dm] are viewed as rank 2 and 1.
struct ElViews {
  TensorView x, memory, y, k_cache, v_cache, x2, y2;
  hattn::MhaWeights w;
};
struct Role {
  const char* name;
  std::vector<int64_t> shape;
  bool written;
};
const int64_t kDm = 64;
const std::vector<Role> kElRoles = {
    {"x", {1, 3, kDm}, false},      {"memory", {1, 5, kDm}, false}, {"y", {1, 3, kDm}, true},
    {"k_cache", {1, 5, kDm}, true}, {"v_cache", {1, 5, kDm}, true}, {"x2", {2, 3, kDm}, false},
    {"y2", {2, 3, kDm}, true},      {"wq", {1, kDm, kDm}, false},   {"bq", {1, 1, kDm}, false},
    {"wk", {1, kDm, kDm}, false},   {"bk", {1, 1, kDm}, false},     {"wv", {1, kDm, kDm}, false},
    {"bv", {1, 1, kDm}, false},     {"wo", {1, kDm, kDm}, false},   {"bo", {1, 1, kDm}, false}};
// sparsek: q [1, 2, 3, 16], k and v [1, 1, 5, 16], x [1, 5, Dm = 16], w_score [Hkv, Dm], u
// [B, Hkv, Lk]; sparsek_mask's z and p [rows = 3, m = 5] and tau [3]. Matrices are held as
// [1, rows, cols] and viewed as rank 2 (tau as rank 1).
struct SkViews {
  TensorView q, k, v, x, w, out, u, z, p, tau;
};
const std::vector<Role> kSkRoles = {{"q", {1, 2, 3, 16}, false},    {"k", {1, 1, 5, 16}, false},
                                    {"v", {1, 1, 5, 16}, false},    {"x", {1, 5, 16}, false},
                                    {"w_score", {1, 1, 16}, false}, {"out", {1, 2, 3, 16}, true},
                                    {"u", {1, 1, 5}, false},        {"z", {1, 3, 5}, false},
                                    {"p", {1, 3, 5}, true},         {"tau", {1, 1, 3}, true}};

std::vector<HostTensor> make_role_tensors(const std::vector<Role>& roles, TestRng& rng) {
  std::vector<HostTensor> t;
  for (const Role& r : roles) {
    t.emplace_back(r.shape, Layout::kContiguous);
    t.back().fill_normal(rng);
    t.back().snapshot();
  }
  return t;
}
// A [1, rows, cols] tensor as the matrix [rows, cols]; a [1, 1, n] one as the vector [n].
TensorView matrix(const HostTensor& t) {
  return TensorView::strided(t.data(), {t.shape()[1], t.shape()[2]}, {t.shape()[2], 1});
}
TensorView vec(const HostTensor& t) { return TensorView::contiguous(t.data(), {t.shape()[2]}); }

// Valid tensors of each variant; a row breaks one thing.
struct Fixture {
  AttnShape s{1, 2, 1, 3, 5, 16};
  std::vector<HostTensor> dense, ffn, loki, lse, el, sk;
  Fixture() {
    TestRng rng("error_paths");
    dense = make_tensors(variant_named("dense"), s, rng);
    ffn = make_tensors(variant_named("topk_ffn"), s, rng);
    loki = make_tensors(variant_named("loki"), s, rng);
    lse.emplace_back(std::vector<int64_t>{1, 2, 3}, Layout::kContiguous);
    el = make_role_tensors(kElRoles, rng);
    sk = make_role_tensors(kSkRoles, rng);
  }
  std::vector<TensorView> d() const { return views_of(variant_named("dense"), dense); }
  std::vector<TensorView> f() const { return views_of(variant_named("topk_ffn"), ffn); }
  std::vector<TensorView> l() const { return views_of(variant_named("loki"), loki); }
  ElViews e() const {
    ElViews t;
    TensorView* rows[7] = {&t.x, &t.memory, &t.y, &t.k_cache, &t.v_cache, &t.x2, &t.y2};
    for (int i = 0; i < 7; ++i) *rows[i] = el[i].view();
    TensorView* w[8] = {&t.w.wq, &t.w.bq, &t.w.wk, &t.w.bk, &t.w.wv, &t.w.bv, &t.w.wo, &t.w.bo};
    for (int i = 0; i < 8; ++i) *w[i] = i % 2 == 0 ? matrix(el[7 + i]) : vec(el[7 + i]);
    return t;
  }
  SkViews k() const {
    return {sk[0].view(), sk[1].view(), sk[2].view(),  sk[3].view(),  matrix(sk[4]),
            sk[5].view(), sk[6].view(), matrix(sk[7]), matrix(sk[8]), vec(sk[9])};
  }
};

Status dense(const std::vector<TensorView>& t, hattn::AttentionOptions o = {}) {
  return hattn::attention(t[0], t[1], t[2], t[3], o);
}
Status topk(const std::vector<TensorView>& t, int64_t k = 2) {
  hattn::TopkOptions o;
  o.k = k;
  return hattn::topk_attention(t[0], t[1], t[2], t[3], o);
}
Status ffn(const std::vector<TensorView>& t, int64_t k = 2) {
  hattn::TopkFfnOptions o;
  o.k = k;
  return hattn::topk_ffn(t[0], t[1], t[2], t[3], o);
}
hattn::LokiOptions loki_opts() {
  hattn::LokiOptions o;
  o.rank = 4;
  o.k = 2;
  return o;
}
Status loki(const std::vector<TensorView>& t, hattn::LokiOptions o = loki_opts()) {
  return hattn::loki_attention(t[0], t[1], t[2], t[3], t[4], o);
}
std::vector<TensorView> all_cuda(std::vector<TensorView> t) {
  for (TensorView& x : t) x.device = Device::cuda;
  return t;
}

hattn::ElOptions el_opts() {
  hattn::ElOptions o;
  o.heads = 2;
  return o;
}
Status el(const ElViews& t, hattn::ElOptions o = el_opts()) {
  return hattn::el_attention(t.x, t.memory, t.w, t.y, o);
}
Status mha(const ElViews& t, hattn::ElOptions o = el_opts()) {
  return hattn::mha_attention(t.x, t.memory, t.w, t.y, o);
}
Status cached(const ElViews& t, hattn::ElOptions o = el_opts()) {
  return hattn::mha_attention_cached(t.x, t.k_cache, t.v_cache, t.w, t.y, o);
}
Status project(const ElViews& t) {
  return hattn::mha_project_memory(t.memory, t.w, t.k_cache, t.v_cache);
}
// The same views with every weight and bias read as bf16 (refused before any is read).
ElViews bf16_weights(ElViews t) {
  for (TensorView* v : {&t.w.wq, &t.w.bq, &t.w.wk, &t.w.bk, &t.w.wv, &t.w.bv, &t.w.wo, &t.w.bo}) {
    v->dtype = DType::bf16;
  }
  return t;
}
// The same views with model dim dm < 64 (a prefix of every row; the strides stay valid).
ElViews with_dm(ElViews t, int64_t dm) {
  for (TensorView* v : {&t.x, &t.memory, &t.y, &t.k_cache, &t.v_cache, &t.x2, &t.y2}) {
    v->shape[2] = dm;
  }
  for (TensorView* v : {&t.w.wq, &t.w.wk, &t.w.wv, &t.w.wo}) v->shape[0] = v->shape[1] = dm;
  for (TensorView* v : {&t.w.bq, &t.w.bk, &t.w.bv, &t.w.bo}) v->shape[0] = dm;
  return t;
}
// Two rows of x and y (B * beam = 2).
ElViews two_rows(ElViews t) {
  t.x = t.x2;
  t.y = t.y2;
  return t;
}

hattn::SparsekOptions sk_opts() {
  hattn::SparsekOptions o;
  o.k = 2;
  o.window = 1;
  return o;
}
Status sk(const SkViews& t, hattn::SparsekOptions o = sk_opts()) {
  return hattn::sparsek_attention(t.q, t.k, t.v, t.x, t.w, t.out, o);
}
Status sk_scored(const SkViews& t, hattn::SparsekOptions o = sk_opts()) {
  return hattn::sparsek_attention_scored(t.q, t.k, t.v, t.u, t.out, o);
}
Status sk_mask(const SkViews& t, int64_t k = 2, const std::vector<int64_t>* lengths = nullptr) {
  return hattn::sparsek_mask(t.z, lengths, k, t.p, t.tau);
}
// A decoder reset for the fixture's sizes (B = 1, Hq = 2, Hkv = 1, D = 16, Dm = 16).
Status reset(hattn::SparsekDecoder* d, const SkViews& t, hattn::SparsekOptions o = sk_opts()) {
  return d->reset(1, 2, 1, 16, t.w, o);
}
// One token's q, k, v, x and out (the fixture's first position).
SkViews one_token(SkViews t) {
  t.q.shape[2] = t.k.shape[2] = t.v.shape[2] = t.out.shape[2] = 1;
  t.x.shape[1] = 1;
  return t;
}
// A stride-0 view: every element is *data (inputs only).
TensorView broadcast(float* data, std::vector<int64_t> shape) {
  std::vector<int64_t> strides(shape.size(), 0);
  strides.back() = 1;  // a size-1 innermost dimension keeps stride 1
  return TensorView::strided(data, std::move(shape), std::move(strides));
}

// The C interface's refusals (it converts its structs before calling attention()).
Status c_call(const hattn_tensor* q) {
  hattn_tensor t{};
  char message[256] = {0};
  const int rc =
      hattn_dense_attention(q, &t, &t, &t, nullptr, 0, 0.f, nullptr, message, sizeof message);
  return Status{static_cast<StatusCode>(rc), message};
}

struct Row {
  std::string file;  // runtime/src/<file>
  std::string site;  // one error return in it (several rows may exercise one site)
  std::function<Status(const Fixture&)> call;
  StatusCode code;
  std::string phrase;     // the message must contain it
  bool real_oom = false;  // needs an allocation to fail with bad_alloc (not under ASan)
};

// ASan's operator new reports an impossible allocation and aborts instead of throwing bad_alloc
// (allocator_may_return_null covers malloc only), so rows that need bad_alloc run without it.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<Row> rows() {
  using F = const Fixture&;
  std::vector<Row> r;
  const auto add = [&](const char* file, const char* site, std::function<Status(F)> call,
                       StatusCode code, std::string phrase) {
    r.push_back({file, site, std::move(call), code, std::move(phrase)});
  };
  const StatusCode bad = StatusCode::invalid_argument, unsup = StatusCode::unsupported;

  // validate.cpp: one view.
  add(
      "validate.cpp", "rank",
      [](F x) {
        auto t = x.d();
        t[0].rank = 3;
        return dense(t);
      },
      bad, "q must have rank 4 (B, H, L, D), got rank 3");
  add(
      "validate.cpp", "null",
      [](F x) {
        auto t = x.d();
        t[1].data = nullptr;
        return dense(t);
      },
      bad, "k has a null data pointer");
  add(
      "validate.cpp", "misaligned",
      [](F x) {
        auto t = x.d();
        t[2].data = static_cast<char*>(t[2].data) + 2;
        return dense(t);
      },
      bad, "is misaligned: f32 tensors must be aligned to 4 bytes");
  add(
      "validate.cpp", "dtype",
      [](F x) {
        SkViews t = x.k();
        t.z.dtype = DType::bf16;  // the SparseK operator works on fp32 scores
        return sk_mask(t);
      },
      unsup,
      "z has dtype bf16; this call has fp32 kernels only (16-bit tensors: attention(), "
      "paged_attention(), ragged_attention(), topk_attention(), loki_attention(), "
      "sparsek_attention(), SparsekDecoder, topk_ffn())");
  add(
      "validate.cpp", "dtype_value",
      [](F x) {
        auto t = x.d();
        t[1].dtype = static_cast<DType>(7);
        return dense(t);
      },
      bad, "k has an unknown dtype value 7");
  add(
      "validate.cpp", "dtype_differs",
      [](F x) {
        auto t = x.d();
        t[2].dtype = DType::f16;
        return dense(t);
      },
      bad, "q has dtype f32 but v has f16; q, k, v and out of a call share one dtype");
  add(
      "validate.cpp", "device_value",
      [](F x) {
        auto t = x.d();
        t[3].device = static_cast<Device>(7);
        return dense(t);
      },
      bad, "out has an unknown device value 7");
  add(
      "validate.cpp", "size_le_0",
      [](F x) {
        auto t = x.d();
        t[1].shape[2] = 0;
        return dense(t);
      },
      bad, "k has a zero-size dimension L = 0");
  add(
      "validate.cpp", "size_le_0",
      [](F x) {
        auto t = x.d();
        t[1].shape[0] = -2;
        return dense(t);
      },
      bad, "k has a negative dimension B = -2");
  add(
      "validate.cpp", "size_gt_int32",
      [](F x) {
        auto t = x.d();
        t[0].shape[1] = int64_t{1} << 31;
        return dense(t);
      },
      bad, "q dimension H = 2147483648 exceeds 2^31-1");
  add(
      "validate.cpp", "stride_range",
      [](F x) {
        auto t = x.d();
        t[0].strides[1] = -16;
        return dense(t);
      },
      bad, "q stride of H = -16 is not supported (strides must be in [0, 2^31-1])");
  add(
      "validate.cpp", "int32_indexing",
      [](F x) {
        auto t = x.d();
        t[1].shape[0] = 1 << 30;
        t[1].strides[0] = 0;
        return dense(t);
      },
      bad, "has more than 2^31-1 elements; hattn's kernels index with 32 bits");
  add(
      "validate.cpp", "int32_indexing",
      [](F x) {
        auto t = x.d();
        t[3].strides[1] = INT32_MAX;
        return dense(t);
      },
      bad, "has an element offset beyond 2^31-1");
  add(
      "validate.cpp", "innermost_stride",
      [](F x) {
        auto t = x.d();
        t[2].strides[3] = 2;
        t[2].strides[2] = 32;
        t[2].strides[1] = 160;
        t[2].strides[0] = 160;
        return dense(t);
      },
      bad, "v must be contiguous in its last dimension D (stride 1)");
  add(
      "validate.cpp", "self_alias",
      [](F x) {
        auto t = x.d();
        t[3].strides[2] = 0;
        return dense(t);
      },
      bad, "out is written but its strides make elements alias each other");
  // validate.cpp: the call.
  add(
      "validate.cpp", "one_device",
      [](F x) {
        auto t = x.d();
        t[2].device = Device::cuda;
        return dense(t);
      },
      bad, "q is on cpu but v is on cuda; every tensor of a call must be on one device");
  add(
      "validate.cpp", "head_dim",
      [](F x) {
        auto t = x.d();
        t[1].shape[3] = 8;
        t[2].shape[3] = 8;
        return dense(t);
      },
      bad, "head dim D differs: q [1, 2, 3, 16], k [1, 1, 5, 8], v [1, 1, 5, 8]");
  add(
      "validate.cpp", "kv_shape",
      [](F x) {
        auto t = x.d();
        t[2].shape[2] = 4;
        return dense(t);
      },
      bad, "k and v must have the same shape, got k [1, 1, 5, 16] and v [1, 1, 4, 16]");
  add(
      "validate.cpp", "kv_shape",
      [](F x) {
        auto t = x.l();
        t[2].shape[2] = 4;
        return loki(t);
      },
      bad, "k_rot and v must have the same shape");
  add(
      "validate.cpp", "out_shape",
      [](F x) {
        auto t = x.d();
        t[3].shape[2] = 2;
        return dense(t);
      },
      bad, "out must have q's shape [1, 2, 3, 16], got [1, 2, 2, 16]");
  add(
      "validate.cpp", "batch",
      [](F x) {
        auto t = x.d();
        t[1].shape[0] = 2;
        t[2].shape[0] = 2;
        return dense(t);
      },
      bad, "batch B differs: q [1, 2, 3, 16], k [2, 1, 5, 16]");
  add(
      "validate.cpp", "heads",
      [](F x) {
        auto t = x.d();
        t[1].shape[1] = 3;
        t[2].shape[1] = 3;
        return dense(t);
      },
      bad, "query heads Hq = 2 must be a multiple of key/value heads Hkv = 3");
  add(
      "validate.cpp", "out_overlaps",
      [](F x) {
        auto t = x.d();
        t[3].data = t[0].data;
        return dense(t);
      },
      bad, "out overlaps q in memory; the output must not alias an input");
  add(
      "validate.cpp", "scale",
      [](F x) {
        hattn::AttentionOptions o;
        o.has_scale = true;
        o.scale = kNaN;
        return dense(x.d(), o);
      },
      bad, "scale must be finite and > 0, got nan");
  add(
      "validate.cpp", "decode_splits",
      [](F x) {
        hattn::AttentionOptions o;
        o.decode_splits = -4;
        return dense(x.d(), o);
      },
      bad, "decode_splits must be >= 0 (0 = automatic), got -4");
  add(
      "validate.cpp", "lse_shape",
      [](F x) {
        TensorView lse = TensorView::contiguous(x.lse[0].data(), {1, 2, 2});
        hattn::AttentionOptions o;
        o.lse = &lse;
        return dense(x.d(), o);
      },
      bad, "lse must have shape [B, Hq, Lq] = [1, 2, 3], got [1, 2, 2]");
  add(
      "validate.cpp", "lse_overlaps",
      [](F x) {
        auto t = x.d();
        TensorView lse = TensorView::contiguous(static_cast<float*>(t[0].data), {1, 2, 3});
        hattn::AttentionOptions o;
        o.lse = &lse;
        return dense(t, o);
      },
      bad, "lse overlaps another tensor in memory");
  add(
      "validate.cpp", "lse_device",
      [](F x) {
        TensorView lse = x.lse[0].view();
        lse.device = Device::cuda;
        hattn::AttentionOptions o;
        o.lse = &lse;
        return dense(x.d(), o);
      },
      bad, "lse is on cuda but q is on cpu; every tensor of a call must be on one device");
  add(
      "validate.cpp", "lse_dtype",
      [](F x) {
        TensorView lse = x.lse[0].view();
        lse.dtype = DType::bf16;
        hattn::AttentionOptions o;
        o.lse = &lse;
        return dense(x.d(), o);
      },
      bad, "lse has dtype bf16; lse is fp32 whatever the dtype of q, k, v and out");
  add(
      "validate.cpp", "check_finite_cuda",
      [](F x) {
        hattn::AttentionOptions o;
        o.check_finite = true;
        return dense(all_cuda(x.d()), o);
      },
      unsup, "check_finite scans host memory and is not available for CUDA tensors");
  add(
      "validate.cpp", "non_finite",
      [](F x) {
        Fixture copy = x;
        copy.dense[1].at_flat(7) = kNaN;
        hattn::AttentionOptions o;
        o.check_finite = true;
        return dense(copy.d(), o);
      },
      StatusCode::non_finite_input, "k holds a non-finite value (nan) at [0, 0, 0, 7]");
  add(
      "validate.cpp", "check_k", [](F x) { return topk(x.d(), 0); }, bad,
      "k (keys kept per row) must be >= 1, got 0");
  add(
      "validate.cpp", "check_k", [](F x) { return ffn(x.f(), -3); }, bad,
      "k (hidden units kept per row) must be >= 1, got -3");
  add(
      "validate.cpp", "cpu_only", [](F x) { return topk(all_cuda(x.d())); }, unsup,
      "topk attention has CPU kernels only; tensors are on cuda");

  // attention.cpp: CUDA tensors without a usable device (skipped where one is usable).
  add(
      "attention.cpp", "no_device", [](F x) { return dense(all_cuda(x.d())); },
      StatusCode::no_device, "cannot run on CUDA: ");

  // topk.cpp: topk_ffn.
  add(
      "topk.cpp", "ffn_cpu_only", [](F x) { return ffn(all_cuda(x.f())); }, unsup,
      "topk_ffn has CPU kernels only");
  add(
      "topk.cpp", "ffn_model_dim",
      [](F x) {
        auto t = x.f();
        t[1].shape[1] = 8;
        return ffn(t);
      },
      bad, "model dim D differs: x has D=16, w1 [d_ff, D] = [5, 8], w2t [d_ff, D] = [5, 16]");
  add(
      "topk.cpp", "ffn_d_ff",
      [](F x) {
        auto t = x.f();
        t[2].shape[0] = 4;
        return ffn(t);
      },
      bad, "w1 and w2t must have the same d_ff, got 5 and 4");
  add(
      "topk.cpp", "ffn_y_shape",
      [](F x) {
        auto t = x.f();
        t[3].shape[0] = 2;
        return ffn(t);
      },
      bad, "y must have x's shape [3, 16]");
  add(
      "topk.cpp", "ffn_dtype",
      [](F x) {
        auto t = x.f();
        t[0].dtype = DType::bf16;
        return ffn(t);
      },
      bad, "topk_ffn takes one dtype for x, w1, w2t and y: x is bf16, y is f32");
  add(
      "topk.cpp", "ffn_y_overlaps",
      [](F x) {
        auto t = x.f();
        t[3].data = t[1].data;
        return ffn(t);
      },
      bad, "y overlaps w1 in memory");

  // loki.cpp.
  add(
      "loki.cpp", "rank_both",
      [](F x) {
        auto o = loki_opts();
        o.rank_fraction = 0.5;
        return loki(x.l(), o);
      },
      bad, "give the Loki rank as rank or as rank_fraction, not both");
  add(
      "loki.cpp", "rank_fraction",
      [](F x) {
        auto o = loki_opts();
        o.rank = 0;
        o.rank_fraction = 2;
        return loki(x.l(), o);
      },
      bad,
      "Loki rank: set rank in [1, D] or rank_fraction in (0, 1], got rank=0 and "
      "rank_fraction=2.000000");
  add(
      "loki.cpp", "rank_range",
      [](F x) {
        auto o = loki_opts();
        o.rank = 17;
        return loki(x.l(), o);
      },
      bad, "Loki rank r=17 is outside [1, D=16]");
  add(
      "loki.cpp", "k_both",
      [](F x) {
        auto o = loki_opts();
        o.k_fraction = 0.5;
        return loki(x.l(), o);
      },
      bad, "give the Loki top-k count as k or as k_fraction, not both");
  add(
      "loki.cpp", "k_fraction",
      [](F x) {
        auto o = loki_opts();
        o.k = 0;
        o.k_fraction = -1;
        return loki(x.l(), o);
      },
      bad, "Loki k_fraction must be in (0, 1], got -1.000000");
  add(
      "loki.cpp", "basis_shape",
      [](F x) {
        auto t = x.l();
        t[3].shape[0] = 2;
        return loki(t);
      },
      bad, "basis must be [Hkv, D, D] = [1, 16, 16], got");
  add(
      "loki.cpp", "basis_device",
      [](F x) {
        auto t = x.l();
        t[3].device = Device::cuda;
        return loki(t);
      },
      unsup, "loki attention has CPU kernels only; basis is on cuda");
  add(
      "loki.cpp", "basis_dtype",
      [](F x) {
        auto t = x.l();
        t[3].dtype = DType::bf16;
        return loki(t);
      },
      bad, "basis has dtype bf16; the basis is float32 in every dtype");
  add(
      "loki.cpp", "lead_dtype",
      [](F x) {
        TensorView lead = x.loki[1].view();
        lead.dtype = DType::f16;
        auto o = loki_opts();
        o.k_lead = &lead;
        return loki(x.l(), o);
      },
      bad, "k_lead has dtype f16 but k_rot has f32; the leading-channel copy shares the cache's");
  add(
      "loki.cpp", "lead_device",
      [](F x) {
        TensorView lead = x.loki[1].view();
        lead.device = Device::cuda;
        auto o = loki_opts();
        o.k_lead = &lead;
        return loki(x.l(), o);
      },
      unsup, "k_lead must be in host (cpu) memory");
  add(
      "loki.cpp", "lead_shape",
      [](F x) {
        TensorView lead = x.loki[1].view();
        lead.shape[2] = 4;
        auto o = loki_opts();
        o.k_lead = &lead;
        return loki(x.l(), o);
      },
      bad, "k_lead must be [B, Hkv, Lk, R] with k_rot's B, Hkv, Lk");
  add(
      "loki.cpp", "lead_channels",
      [](F x) {
        TensorView lead = x.loki[1].view();
        lead.shape[3] = 3;  // r = 4 needs R >= 4
        auto o = loki_opts();
        o.k_lead = &lead;
        return loki(x.l(), o);
      },
      bad, "k_lead holds R=3 channels; it needs r=4 <= R <= D=16");
  add(
      "loki.cpp", "out_overlaps_lead",
      [](F x) {
        auto t = x.l();
        TensorView lead = TensorView::contiguous(static_cast<float*>(t[4].data), {1, 1, 5, 4});
        auto o = loki_opts();
        o.k_lead = &lead;
        return loki(t, o);
      },
      bad, "out overlaps k_lead in memory");
  add(
      "loki.cpp", "out_overlaps_basis",
      [](F x) {
        auto t = x.l();
        t[4].data = t[3].data;
        return loki(t);
      },
      bad, "out overlaps basis in memory");
  add(
      "loki.cpp", "basis_not_orthonormal",
      [](F x) {
        Fixture c = x;
        c.loki[3].at_flat(5) += 0.01f;
        return loki(c.l());
      },
      bad, "(the basis must be orthonormal; LokiOptions::check_basis)");

  // loki_basis.cpp: loki_check_basis (public, hattn/loki_prep.h).
  const auto basis = [](F x) { return x.loki[3].view(); };
  add(
      "loki_basis.cpp", "rank",
      [=](F x) {
        auto b = basis(x);
        b.rank = 2;
        return hattn::loki_check_basis(b, 1e-4);
      },
      bad, "basis must have rank 3 [Hkv, D, D] or 4 [L, Hkv, D, D], got rank 2");
  add(
      "loki_basis.cpp", "null",
      [=](F x) {
        auto b = basis(x);
        b.data = nullptr;
        return hattn::loki_check_basis(b, 1e-4);
      },
      bad, "basis has a null data pointer");
  add(
      "loki_basis.cpp", "dtype",
      [=](F x) {
        auto b = basis(x);
        b.dtype = DType::f16;
        return hattn::loki_check_basis(b, 1e-4);
      },
      bad, "basis has dtype f16; it must be f32");
  add(
      "loki_basis.cpp", "device",
      [=](F x) {
        auto b = basis(x);
        b.device = Device::cuda;
        return hattn::loki_check_basis(b, 1e-4);
      },
      bad, "basis is on device cuda; the check reads host (cpu) memory only");
  add(
      "loki_basis.cpp", "square",
      [=](F x) {
        auto b = basis(x);
        b.shape[2] = 8;
        return hattn::loki_check_basis(b, 1e-4);
      },
      bad, "basis must be square per head (..., D, D)");
  add(
      "loki_basis.cpp", "tolerance", [=](F x) { return hattn::loki_check_basis(basis(x), -1.0); },
      bad, "tolerance must be finite and >= 0, got -1");
  add(
      "loki_basis.cpp", "not_orthonormal",
      [](F x) {
        Fixture c = x;
        c.loki[3].at_flat(0) = kNaN;
        return hattn::loki_check_basis(c.loki[3].view(), 1e-4);
      },
      bad,
      "basis is not orthonormal: head 0: max |P^T P - I| = inf exceeds the tolerance 0.0001 "
      "(non-finite entries)");

  // loki_basis.cpp: loki_captured_variance and loki_basis_layer (public, hattn/loki_prep.h). The
  // fixture's rotated keys [1, 1, 5, 16] seen as [Hkv, N, D] = [1, 5, 16] against its basis.
  const auto drop0 = [](TensorView t) {
    for (int i = 0; i + 1 < t.rank; ++i) {
      t.shape[i] = t.shape[i + 1];
      t.strides[i] = t.strides[i + 1];
    }
    --t.rank;
    return t;
  };
  const auto share = std::make_shared<std::vector<float>>(16, 0.f);
  const auto share_view = [share] { return TensorView::contiguous(share->data(), {1, 16}); };
  const auto captured = [=](TensorView keys, TensorView b) {
    return hattn::loki_captured_variance(keys, b, share_view());
  };
  add(
      "loki_basis.cpp", "captured_rank",
      [=](F x) {
        auto k = drop0(drop0(x.loki[1].view()));
        return captured(k, basis(x));
      },
      bad, "keys must have rank 3 [Hkv, N, D] or 4 [L, Hkv, N, D], got rank 2");
  add(
      "loki_basis.cpp", "captured_device",
      [=](F x) {
        auto k = drop0(x.loki[1].view());
        k.device = Device::cuda;
        return captured(k, basis(x));
      },
      bad, "keys is on device cuda; this call reads host memory");
  add(
      "loki_basis.cpp", "captured_basis_shape",
      [=](F x) {
        auto b = basis(x);
        b.shape[1] = 8;
        return captured(drop0(x.loki[1].view()), b);
      },
      bad, "basis [1, 8, 16] does not match keys [1, 5, 16]: it must be [1, 16, 16]");
  add(
      "loki_basis.cpp", "captured_share_shape",
      [=](F x) {
        return hattn::loki_captured_variance(drop0(x.loki[1].view()), basis(x),
                                             TensorView::contiguous(share->data(), {1, 8}));
      },
      bad, "share [1, 8] must be [1, 16]");
  add(
      "loki_basis.cpp", "captured_samples",
      [=](F x) {
        auto k = drop0(x.loki[1].view());
        k.shape[1] = 1;
        return captured(k, basis(x));
      },
      bad, "keys need N >= 2 samples per head, got [1, 1, 16]");
  add(
      "loki_basis.cpp", "captured_overlap",
      [=](F x) {
        auto k = drop0(x.loki[1].view());
        TensorView into_keys = k;
        into_keys.rank = 2;
        into_keys.shape[0] = 1;
        into_keys.shape[1] = 16;
        into_keys.strides[0] = 16;
        into_keys.strides[1] = 1;
        return hattn::loki_captured_variance(k, basis(x), into_keys);
      },
      bad, "share overlaps keys or basis");
  add(
      "loki_basis.cpp", "captured_no_variance",
      [=](F x) {
        Fixture c = x;
        for (int64_t j = 0; j < 5 * 16; ++j) c.loki[1].at_flat(j) = 0.5f;
        return captured(drop0(c.loki[1].view()), basis(c));
      },
      bad, "keys of head 0 are all equal: they have no variance to share");
  add(
      "loki_basis.cpp", "captured_no_variance",
      [=](F x) {
        Fixture c = x;
        c.loki[1].at_flat(7) = kNaN;
        return captured(drop0(c.loki[1].view()), basis(c));
      },
      bad, "keys of head 0 hold a non-finite value (NaN or inf)");
  add(
      "loki_basis.cpp", "captured_basis_nonfinite",
      [=](F x) {
        Fixture c = x;
        c.loki[3].at_flat(3) = kNaN;
        return captured(drop0(x.loki[1].view()), basis(c));
      },
      bad, "basis of head 0 holds a non-finite value (NaN or inf)");
  const auto layered = [=](F x) {  // the basis as a one-layer [1, Hkv, D, D]
    TensorView b = basis(x);
    for (int i = 3; i > 0; --i) {
      b.shape[i] = b.shape[i - 1];
      b.strides[i] = b.strides[i - 1];
    }
    b.shape[0] = 1;
    b.strides[0] = b.shape[1] * b.strides[1];
    b.rank = 4;
    return b;
  };
  add(
      "loki_basis.cpp", "layer_null",
      [=](F x) { return hattn::loki_basis_layer(layered(x), 0, nullptr); }, bad,
      "layer_basis is null");
  add(
      "loki_basis.cpp", "layer_rank",
      [=](F x) {
        TensorView out;
        return hattn::loki_basis_layer(basis(x), 0, &out);
      },
      bad, "a per-layer basis must have rank 4 [L, Hkv, D, D], got rank 3 [1, 16, 16]");
  add(
      "loki_basis.cpp", "layer_range",
      [=](F x) {
        TensorView out;
        return hattn::loki_basis_layer(layered(x), 1, &out);
      },
      bad, "layer 1 is outside [0, 0] of the basis [1, 1, 16, 16]");

  // dispatch.cpp.
  add(
      "dispatch.cpp", "forced_incapable",
      [](F x) {
        hattn::AttentionOptions o;
        o.kernel = "topk_prefill_noncausal_dany_f32_" + cpu_family();
        return dense(x.d(), o);
      },
      unsup, "cannot take this call: variant topk, not dense");
  add(
      "dispatch.cpp", "no_such_kernel",
      [](F x) {
        hattn::TopkOptions o;
        o.k = 2;
        o.kernel = "nope";
        auto t = x.d();
        return hattn::topk_attention(t[0], t[1], t[2], t[3], o);
      },
      bad, "no kernel named 'nope' was generated for this program");

  // halide_glue.cpp: a kernel that fails (here: its scratch allocation) is a kernel_error
  // with Halide's message, not a crash.
  add(
      "halide_glue.cpp", "kernel_failed",
      [](F x) {
        // A first call installs hattn's allocator; then every allocation fails, once.
        TensorView lse = x.lse[0].view();
        hattn::AttentionOptions o;
        o.lse = &lse;
        EXPECT_TRUE(dense(x.d(), o).ok());
        const halide_malloc_t saved =
            halide_set_custom_malloc([](void*, size_t) -> void* { return nullptr; });
        // Prefill with lse keeps its final states in scratch (Lq > the decode threshold).
        TestRng rng("oom");
        std::vector<HostTensor> t =
            make_tensors(variant_named("dense"), {1, 2, 1, 40, 50, 16}, rng);
        HostTensor big_lse({1, 2, 40}, Layout::kContiguous);
        TensorView big = big_lse.view();
        o.lse = &big;
        Status s = dense(views_of(variant_named("dense"), t), o);
        halide_set_custom_malloc(saved);
        return s;
      },
      StatusCode::kernel_error, "failed (Halide error");

  // el.cpp: el_attention, mha_project_memory, mha_attention_cached, mha_attention.
  add(
      "el.cpp", "weight_device",
      [](F x) {
        auto t = x.e();
        t.w.wk.device = Device::cuda;
        return el(t);
      },
      unsup, "el and the standard MHA path have CPU kernels only; weights must be on the CPU");
  add(
      "el.cpp", "weight_shape",
      [](F x) {
        auto t = x.e();
        t.w.wv.shape[1] = 32;
        return el(t);
      },
      bad, "wv must be [64, 64] for Dm=64, got [64, 32]");
  add(
      "el.cpp", "weights_dtype",
      [](F x) {
        auto t = x.e();
        t.w.wv.dtype = DType::bf16;
        return el(t);
      },
      bad, "the weights and biases share one dtype: wq is f32, wv is bf16");
  add(
      "el.cpp", "activation_dtype",
      [](F x) {
        auto t = bf16_weights(x.e());
        t.x.dtype = DType::f16;
        return el(t);
      },
      bad, "x has dtype f16; activations are f32 or the weights' dtype (bf16)");
  add(
      "el.cpp", "el_memory_dtype", [](F x) { return el(bf16_weights(x.e())); }, bad,
      "el reads the memory in the weights' dtype (bf16); memory is f32");
  add(
      "el.cpp", "cache_fp32",
      [](F x) {
        auto t = x.e();
        t.k_cache.dtype = DType::bf16;
        return project(t);
      },
      unsup, "k_cache has dtype bf16; the standard path's caches hold fp32 projections");
  add(
      "el.cpp", "weight_shape",
      [](F x) {
        auto t = x.e();
        t.w.bo.shape[0] = 32;
        return project(t);
      },
      bad, "bo must be [64] for Dm=64, got [32]");
  add(
      "el.cpp", "rows_device",
      [](F x) {
        auto t = x.e();
        t.x.device = Device::cuda;
        return el(t);
      },
      unsup, "el and the standard MHA path have CPU kernels only; x is on cuda");
  add(
      "el.cpp", "rows_device",
      [](F x) {
        auto t = x.e();
        t.memory.device = Device::cuda;
        return mha(t);
      },
      unsup, "el and the standard MHA path have CPU kernels only; memory is on cuda");
  add(
      "el.cpp", "rows_device",
      [](F x) {
        auto t = x.e();
        t.v_cache.device = Device::cuda;
        return cached(t);
      },
      unsup, "el and the standard MHA path have CPU kernels only; v_cache is on cuda");
  add(
      "el.cpp", "model_dim",
      [](F x) {
        auto t = x.e();
        t.x.shape[2] = 48;
        return el(t);
      },
      bad, "model dim Dm differs: x [1, 3, 48], memory has Dm=64");
  add(
      "el.cpp", "y_shape",
      [](F x) {
        auto t = x.e();
        t.y.shape[1] = 2;
        return cached(t);
      },
      bad, "y must have x's shape [1, 3, 64], got [1, 2, 64]");
  add(
      "el.cpp", "dm_multiple", [](F x) { return el(with_dm(x.e(), 56)); }, unsup,
      "model dim Dm=56 is not a multiple of 16 (the linear and el kernels reduce over Dm");
  add(
      "el.cpp", "heads",
      [](F x) {
        auto o = el_opts();
        o.heads = 0;
        return el(x.e(), o);
      },
      bad, "heads must be >= 1, got 0");
  add(
      "el.cpp", "heads_divide",
      [](F x) {
        auto o = el_opts();
        o.heads = 3;
        return cached(x.e(), o);
      },
      bad, "Dm=64 is not divisible by heads=3");
  add(
      "el.cpp", "beam",
      [](F x) {
        auto o = el_opts();
        o.beam = 0;
        return el(x.e(), o);
      },
      bad, "beam must be >= 1, got 0");
  add(
      "el.cpp", "beam_divide",
      [](F x) {
        auto o = el_opts();
        o.beam = 2;
        return el(x.e(), o);
      },
      bad, "x has 1 rows, not divisible by beam=2 (x is [B * beam, T, Dm])");
  add(
      "el.cpp", "samples", [](F x) { return el(two_rows(x.e())); }, bad,
      "x has 2 rows = 2 samples x beam 1, but the memory has B=1");
  add(
      "el.cpp", "scale",
      [](F x) {
        auto o = el_opts();
        o.has_scale = true;
        o.scale = kNaN;
        return el(x.e(), o);
      },
      bad, "scale must be positive and finite, got nan");
  add(
      "el.cpp", "key_lengths",
      [](F x) {
        const int32_t lengths[1] = {6};
        auto o = el_opts();
        o.key_lengths = lengths;
        return el(x.e(), o);
      },
      bad, "key_lengths[0] = 6 is outside [0, N=5]");
  add(
      "el.cpp", "y_overlaps_x",
      [](F x) {
        auto t = x.e();
        t.y.data = t.x.data;
        return el(t);
      },
      bad, "y overlaps x in memory");
  add(
      "el.cpp", "y_overlaps_weight",
      [](F x) {
        auto t = x.e();
        t.y.data = t.w.wo.data;
        return cached(t);
      },
      bad, "y overlaps wo in memory");
  add(
      "el.cpp", "y_overlaps_memory",
      [](F x) {
        auto t = x.e();
        t.y.data = t.memory.data;
        return el(t);
      },
      bad, "y overlaps memory");
  add(
      "el.cpp", "el_min_dm", [](F x) { return el(with_dm(x.e(), 48)); }, unsup,
      "el kernels need Dm >= 64 (their model-dimension tiles are that wide), got Dm=48; use "
      "mha_attention");
  add(
      "el.cpp", "project_dm_multiple", [](F x) { return project(with_dm(x.e(), 56)); }, unsup,
      "model dim Dm=56 is not a multiple of 16 (the linear kernel reduces over Dm");
  add(
      "el.cpp", "project_dm_multiple", [](F x) { return mha(with_dm(x.e(), 40)); }, unsup,
      "model dim Dm=40 is not a multiple of 16 (the linear kernel reduces over Dm");
  add(
      "el.cpp", "cache_shape",
      [](F x) {
        auto t = x.e();
        t.k_cache.shape[1] = 4;
        return project(t);
      },
      bad, "k_cache must have memory's shape [1, 5, 64], got [1, 4, 64]");
  add(
      "el.cpp", "cache_shape",
      [](F x) {
        auto t = x.e();
        t.v_cache.shape[0] = 2;
        t.v_cache.shape[1] = 2;
        return project(t);
      },
      bad, "v_cache must have memory's shape [1, 5, 64], got [2, 2, 64]");
  add(
      "el.cpp", "cache_overlaps_memory",
      [](F x) {
        auto t = x.e();
        t.v_cache.data = t.memory.data;
        return project(t);
      },
      bad, "v_cache overlaps memory");
  add(
      "el.cpp", "caches_overlap",
      [](F x) {
        auto t = x.e();
        t.v_cache.data = t.k_cache.data;
        return project(t);
      },
      bad, "k_cache and v_cache overlap");
  add(
      "el.cpp", "cached_kv_shape",
      [](F x) {
        auto t = x.e();
        t.v_cache.shape[1] = 4;
        return cached(t);
      },
      bad, "k_cache and v_cache must have the same shape, got [1, 5, 64] and [1, 4, 64]");
  add(
      "el.cpp", "cached_beam",
      [](F x) {
        auto o = el_opts();
        o.beam = -1;
        return cached(x.e(), o);
      },
      bad, "beam must be >= 1, got -1");
  add(
      "el.cpp", "cached_beam",
      [](F x) {
        auto o = el_opts();
        o.beam = 0;
        return mha(x.e(), o);
      },
      bad, "beam must be >= 1, got 0");
  add(
      "el.cpp", "cached_causal_shared",
      [](F x) {
        auto o = el_opts();
        o.beam = 2;
        o.causal = true;
        return cached(two_rows(x.e()), o);  // a cache of B = 1 for 2 beams
      },
      bad, "a causal call with beam > 1 needs one cache per beam ([B * beam, N, Dm])");

  // sparsek_{scoring,mask,attention,decoder}.cpp: sparsek_scores and the shared checks,
  // sparsek_mask, sparsek_attention(_scored), SparsekDecoder.
  add(
      "sparsek_scoring.cpp", "options_k",
      [](F x) {
        auto o = sk_opts();
        o.k = -1;
        return sk(x.k(), o);
      },
      bad, "sparsek budget k must be >= 0, got -1");
  add(
      "sparsek_scoring.cpp", "options_k",
      [](F x) {
        hattn::SparsekDecoder d;
        auto o = sk_opts();
        o.k = -5;
        return reset(&d, x.k(), o);
      },
      bad, "sparsek budget k must be >= 0, got -5");
  add(
      "sparsek_scoring.cpp", "options_window",
      [](F x) {
        auto o = sk_opts();
        o.window = -2;
        return sk_scored(x.k(), o);
      },
      bad, "sparsek window w must be >= 0, got -2");
  add(
      "sparsek_scoring.cpp", "options_slope",
      [](F x) {
        auto o = sk_opts();
        o.slope = kNaN;
        return sk(x.k(), o);
      },
      bad, "sparsek slope must be finite");
  add(
      "sparsek_scoring.cpp", "options_below_2p30",
      [](F x) {
        auto o = sk_opts();
        o.k = int64_t{1} << 30;
        return sk(x.k(), o);
      },
      bad, "sparsek k and w must be below 2^30");
  add(
      "sparsek_scoring.cpp", "options_below_2p30",
      [](F x) {
        hattn::SparsekDecoder d;
        auto o = sk_opts();
        o.window = int64_t{1} << 40;
        return reset(&d, x.k(), o);
      },
      bad, "sparsek k and w must be below 2^30");
  add(
      "sparsek_scoring.cpp", "host",
      [](F x) {
        auto t = x.k();
        t.x.device = Device::cuda;
        return sk(t);
      },
      unsup, "sparsek has CPU kernels only; x is on cuda");
  add(
      "sparsek_scoring.cpp", "host",
      [](F x) {
        auto t = x.k();
        t.u.device = Device::cuda;
        return sk_scored(t);
      },
      unsup, "sparsek has CPU kernels only; u is on cuda");
  add(
      "sparsek_scoring.cpp", "host",
      [](F x) {
        auto t = x.k();
        t.tau.device = Device::cuda;
        return sk_mask(t);
      },
      unsup, "sparsek has CPU kernels only; tau is on cuda");
  add(
      "sparsek_scoring.cpp", "host",
      [](F x) {
        hattn::SparsekDecoder d;
        auto t = x.k();
        t.w.device = Device::cuda;
        return reset(&d, t);
      },
      unsup, "sparsek has CPU kernels only; w_score is on cuda");
  add(
      "sparsek_scoring.cpp", "scoring_x_shape",
      [](F x) {
        auto t = x.k();
        t.x.shape[1] = 4;
        return sk(t);
      },
      bad, "x must be [B, Lk, Dm] with B=1 and Lk=5 (the keys' batch and length), got [1, 4, 16]");
  add(
      "sparsek_scoring.cpp", "scoring_x_shape",
      [](F x) {
        auto t = x.k();
        t.u.shape[2] = 4;
        return hattn::sparsek_scores(t.x, t.w, 0.f, t.u);
      },
      bad, "x must be [B, Lk, Dm] with B=1 and Lk=4 (the keys' batch and length), got [1, 5, 16]");
  add(
      "sparsek_scoring.cpp", "scoring_w_shape",
      [](F x) {
        auto t = x.k();
        t.w.shape[1] = 8;
        return sk(t);
      },
      bad, "w_score must be [Hkv, Dm] = [1, 16], got [1, 8]");
  add(
      "sparsek_attention.cpp", "selections_fit",
      [](F) {
        // D = 1 and stride-0 keys: Lk = 2^31-1 keys held in one float each, so 2^16 query rows
        // x min(k, Lk) = 2^30-1 slots need 2^48 bytes of selections.
        const int64_t lq = int64_t{1} << 16, lk = INT32_MAX;
        std::vector<float> in(5, 0.f), out(static_cast<size_t>(lq));
        auto o = sk_opts();
        o.k = (int64_t{1} << 30) - 1;
        return hattn::sparsek_attention(
            broadcast(&in[0], {1, 1, lq, 1}), broadcast(&in[1], {1, 1, lk, 1}),
            broadcast(&in[2], {1, 1, lk, 1}), broadcast(&in[3], {1, lk, 1}),
            broadcast(&in[4], {1, 1}), TensorView::contiguous(out.data(), {1, 1, lq, 1}), o);
      },
      bad,
      "sparsek: the selections of 65536 rows x 1073741823 keys per kv head do not fit in memory");
  r.back().real_oom = true;
  add(
      "sparsek_scoring.cpp", "scores_slope",
      [](F x) {
        auto t = x.k();
        return hattn::sparsek_scores(t.x, t.w, kNaN, t.u);
      },
      bad, "sparsek slope must be finite");
  add(
      "sparsek_scoring.cpp", "scores_overlap",
      [](F x) {
        auto t = x.k();
        const TensorView u = TensorView::contiguous(static_cast<float*>(t.w.data), {1, 1, 5});
        return hattn::sparsek_scores(t.x, t.w, 0.f, u);
      },
      bad, "u overlaps x or w_score in memory");
  add(
      "sparsek_mask.cpp", "mask_k", [](F x) { return sk_mask(x.k(), -1); }, bad,
      "sparsek budget k must be >= 0, got -1");
  add(
      "sparsek_mask.cpp", "mask_p_shape",
      [](F x) {
        auto t = x.k();
        t.p.shape[1] = 4;
        return sk_mask(t);
      },
      bad, "p must have z's shape [3, 5], got [3, 4]");
  add(
      "sparsek_mask.cpp", "mask_tau_shape",
      [](F x) {
        auto t = x.k();
        t.tau.shape[0] = 2;
        return sk_mask(t);
      },
      bad, "tau must be [rows] = [3], got [2]");
  add(
      "sparsek_mask.cpp", "mask_overlap",
      [](F x) {
        auto t = x.k();
        t.tau.data = t.p.data;
        return sk_mask(t);
      },
      bad, "p, tau and z must not overlap in memory");
  add(
      "sparsek_mask.cpp", "mask_overlap",
      [](F x) {
        auto t = x.k();
        t.p.data = t.z.data;
        return sk_mask(t);
      },
      bad, "p, tau and z must not overlap in memory");
  add(
      "sparsek_mask.cpp", "mask_lengths_count",
      [](F x) {
        const std::vector<int64_t> n = {5, 5};
        return sk_mask(x.k(), 2, &n);
      },
      bad, "lengths has 2 entries for 3 rows");
  add(
      "sparsek_mask.cpp", "mask_lengths_range",
      [](F x) {
        const std::vector<int64_t> n = {0, 6, 1};
        return sk_mask(x.k(), 2, &n);
      },
      bad, "lengths[1] = 6 is outside [0, m=5]");
  add(
      "sparsek_attention.cpp", "out_overlaps_x",
      [](F x) {
        auto t = x.k();
        t.x = TensorView::contiguous(static_cast<float*>(t.out.data), {1, 5, 16});
        return sk(t);
      },
      bad, "out overlaps x in memory");
  add(
      "sparsek_attention.cpp", "out_overlaps_w_score",
      [](F x) {
        auto t = x.k();
        t.w = TensorView::contiguous(static_cast<float*>(t.out.data) + 16, {1, 16});
        return sk(t);
      },
      bad, "out overlaps w_score in memory");
  add(
      "sparsek_attention.cpp", "scored_u_shape",
      [](F x) {
        auto t = x.k();
        t.u.shape[2] = 4;
        return sk_scored(t);
      },
      bad, "u must be [B, Hkv, Lk] = [1, 1, 5], got [1, 1, 4]");
  add(
      "sparsek_attention.cpp", "scored_out_overlaps_u",
      [](F x) {
        auto t = x.k();
        t.u = TensorView::contiguous(static_cast<float*>(t.out.data) + 3, {1, 1, 5});
        return sk_scored(t);
      },
      bad, "out overlaps u in memory");
  add(
      "sparsek_decoder.cpp", "decoder_sizes",
      [](F x) {
        hattn::SparsekDecoder d;
        return d.reset(1, 2, 1, 0, x.k().w, sk_opts());
      },
      bad, "SparsekDecoder sizes must be >= 1, got B=1 Hq=2 Hkv=1 D=0");
  add(
      "sparsek_decoder.cpp", "decoder_heads",
      [](F x) {
        hattn::SparsekDecoder d;
        return d.reset(1, 3, 2, 16, x.k().w, sk_opts());
      },
      bad, "Hq=3 is not a multiple of Hkv=2");
  add(
      "sparsek_decoder.cpp", "decoder_dtype",
      [](F x) {
        hattn::SparsekDecoder d;
        return d.reset(1, 2, 1, 16, x.k().w, sk_opts(), static_cast<DType>(7));
      },
      bad, "SparsekDecoder dtype must be f32, bf16 or f16, got the value 7");
  add(
      "sparsek_decoder.cpp", "cache_dtype",
      [](F x) {
        hattn::SparsekDecoder d;
        auto t = one_token(x.k());
        EXPECT_TRUE(d.reset(1, 2, 1, 16, t.w, sk_opts(), DType::bf16).ok());
        return d.step(t.q, t.k, t.v, t.x, t.out);  // fp32 tensors against a bf16 cache
      },
      bad, "SparsekDecoder holds a bf16 cache (reset's dtype); q is f32");
  add(
      "sparsek_decoder.cpp", "decoder_w_shape",
      [](F x) {
        hattn::SparsekDecoder d;
        return d.reset(1, 2, 2, 16, x.k().w, sk_opts());
      },
      bad, "w_score must be [Hkv=2, Dm], got [1, 16]");
  add(
      "sparsek_decoder.cpp", "decoder_cache_fits",
      [](F x) {
        // k + w = 2^30-1 slots of D = 2^24 floats: 2^56 bytes.
        hattn::SparsekDecoder d;
        auto o = sk_opts();
        o.k = (int64_t{1} << 30) - 2;
        return d.reset(1, 1, 1, int64_t{1} << 24, x.k().w, o);
      },
      bad,
      "SparsekDecoder: a cache of k + w = 1073741823 KV pairs per kv head (1 kv heads, "
      "D=16777216) does not fit in memory");
  r.back().real_oom = true;
  add(
      "sparsek_decoder.cpp", "decoder_cache_fits",
      [](F x) {
        // k + w = 2^31-2 slots of D = 2^40 floats: the element count alone overflows 2^63
        // (std::vector would throw length_error, not bad_alloc).
        hattn::SparsekDecoder d;
        auto o = sk_opts();
        o.k = (int64_t{1} << 30) - 1;
        o.window = (int64_t{1} << 30) - 1;
        return d.reset(1, 1, 1, int64_t{1} << 40, x.k().w, o);
      },
      bad, "does not fit in memory");
  add(
      "sparsek_decoder.cpp", "append_before_reset",
      [](F x) {
        hattn::SparsekDecoder d;
        auto t = x.k();
        return d.append(t.k, t.v, t.x);
      },
      bad, "SparsekDecoder::append before a successful reset()");
  add(
      "sparsek_decoder.cpp", "append_before_reset",
      [](F x) {
        hattn::SparsekDecoder d;
        auto t = x.k();
        EXPECT_FALSE(d.reset(0, 2, 1, 16, t.w, sk_opts()).ok());  // a failed reset leaves none
        return d.append(t.k, t.v, t.x);
      },
      bad, "SparsekDecoder::append before a successful reset()");
  add(
      "sparsek_decoder.cpp", "append_kv_shape",
      [](F x) {
        hattn::SparsekDecoder d;
        auto t = x.k();
        EXPECT_TRUE(reset(&d, t).ok());
        t.v.shape[2] = 4;
        return d.append(t.k, t.v, t.x);
      },
      bad, "k and v must have the same shape");
  add(
      "sparsek_decoder.cpp", "append_shape",
      [](F x) {
        hattn::SparsekDecoder d;
        auto t = x.k();
        EXPECT_TRUE(d.reset(1, 2, 1, 8, t.w, sk_opts()).ok());
        return d.append(t.k, t.v, t.x);
      },
      bad, "SparsekDecoder::append takes k, v [B=1, Hkv=1, T, D=8], got [1, 1, 5, 16]");
  add(
      "sparsek_decoder.cpp", "append_x_shape",
      [](F x) {
        hattn::SparsekDecoder d;
        auto t = x.k();
        EXPECT_TRUE(reset(&d, t).ok());
        t.x.shape[1] = 4;
        return d.append(t.k, t.v, t.x);
      },
      bad, "x must be [B=1, T=5, Dm=16], got [1, 4, 16]");
  add(
      "sparsek_decoder.cpp", "append_too_long",
      [](F) {
        // T = 2^31-1 tokens of D = Dm = 1 in stride-0 views: refused before any is absorbed.
        float in[4] = {0.f, 0.f, 0.f, 0.f};
        hattn::SparsekDecoder d;
        auto o = sk_opts();
        EXPECT_TRUE(d.reset(1, 1, 1, 1, broadcast(&in[0], {1, 1}), o).ok());
        return d.append(broadcast(&in[1], {1, 1, INT32_MAX, 1}),
                        broadcast(&in[2], {1, 1, INT32_MAX, 1}),
                        broadcast(&in[3], {1, INT32_MAX, 1}));
      },
      bad, "sequence too long (2^31)");
  add(
      "sparsek_decoder.cpp", "step_before_reset",
      [](F x) {
        hattn::SparsekDecoder d;
        auto t = one_token(x.k());
        return d.step(t.q, t.k, t.v, t.x, t.out);
      },
      bad, "SparsekDecoder::step before a successful reset()");
  add(
      "sparsek_decoder.cpp", "step_shape",
      [](F x) {
        hattn::SparsekDecoder d;
        auto t = x.k();
        EXPECT_TRUE(reset(&d, t).ok());
        return d.step(t.q, t.k, t.v, t.x, t.out);
      },
      bad,
      "SparsekDecoder::step takes q [B=1, Hq=2, 1, D=16] and k, v [B, Hkv=1, 1, D], got q "
      "[1, 2, 3, 16], k [1, 1, 5, 16]");
  add(
      "sparsek_decoder.cpp", "step_x_shape",
      [](F x) {
        hattn::SparsekDecoder d;
        auto t = one_token(x.k());
        EXPECT_TRUE(reset(&d, t).ok());
        t.x.shape[2] = 8;
        return d.step(t.q, t.k, t.v, t.x, t.out);
      },
      bad, "x must be [B=1, 1, Dm=16], got [1, 1, 8]");

  // c_api.cpp: the C interface's own conversions.
  add(
      "c_api.cpp", "null_tensor", [](F) { return c_call(nullptr); }, bad, "q is NULL");
  add(
      "c_api.cpp", "rank",
      [](F) {
        hattn_tensor q{};
        q.rank = 5;
        return c_call(&q);
      },
      bad, "q has rank 5 (1..4 allowed)");
  add(
      "c_api.cpp", "device",
      [](F) {
        hattn_tensor q{};
        q.rank = 4;
        q.device = 9;
        return c_call(&q);
      },
      bad, "q has unknown device 9");
  add(
      "c_api.cpp", "dtype",
      [](F) {
        hattn_tensor q{};
        q.rank = 4;
        q.dtype = 7;
        return c_call(&q);
      },
      bad, "q has unknown dtype 7 (HATTN_DTYPE_F32, _BF16, _F16)");

  // target_select.cpp: the ISA cap (the cap in force is left as it was).
  add(
      "target_select.cpp", "unknown_level", [](F) { return hattn::limit_isa("avx1024"); }, bad,
      "unknown ISA level 'avx1024'");
  return r;
}

// Error sites no public call can reach in this build (or only at a cost no unit test can pay),
// and why.
const std::map<std::string, std::vector<std::string>> kUnreachable = {
    {"dispatch.cpp",
     {"no kernels of the variant: every entry point's variant has kernels in every build "
      "(cmake/HattnKernels.cmake); reachable only in a build whose kernel matrix lacks one",
      "no capable kernel: each variant has generic-D kernels for both masks and phases, and an "
      "SSE4.1 / NEON build every such CPU runs; reachable only where a CPU runs none of a "
      "kernel's builds"}},
    {"sparsek_decoder.cpp",
     {"SparsekDecoder::step's sequence too long (2^31): append refuses position + T >= 2^31-1, "
      "so a decoder reaches position 2^31-1 only by absorbing 2^31-1 tokens one at a time (about "
      "20 s even with D = Dm = 1 and k = w = 0), then one step; append's own check is a row"}},
};

TEST(ErrorPaths, EveryRowGivesItsCodeAndMessage) {
  const Fixture x;
  std::string why;
  const bool gpu = hattn::cuda_available(&why);
  for (const Row& row : rows()) {
    SCOPED_TRACE(row.file + " " + row.site + ": expecting \"" + row.phrase + "\"");
    if (gpu && row.code == StatusCode::no_device) {
      std::cout << "[   INFO   ] " << row.site << " not checked: a CUDA device is usable here\n";
      continue;
    }
    if (kAsan && row.real_oom) {
      std::cout << "[   INFO   ] " << row.site
                << " not checked under ASan: its operator new aborts instead of throwing bad_alloc"
                   " (checked in the plain build)\n";
      continue;
    }
    Status s = row.call(x);
    EXPECT_EQ(s.code, row.code) << hattn::to_string(s.code) << ": " << s.message;
    EXPECT_NE(s.message.find(row.phrase), std::string::npos) << "message: \"" << s.message << "\"";
  }
  // The fixture's inputs are unchanged by every row (rows that must edit an input edit a copy;
  // the kernel_failed row's first call writes dense's out, legitimately).
  const std::pair<const char*, const std::vector<HostTensor>*> sets[] = {
      {"dense", &x.dense}, {"topk_ffn", &x.ffn}, {"loki", &x.loki}};
  for (const auto& [name, set] : sets) {
    const Variant& v = variant_named(name);
    for (size_t i = 0; i < set->size(); ++i) {
      if (!v.written[i]) {
        EXPECT_EQ((*set)[i].changed_since_snapshot(false), "") << name << " " << v.roles[i];
      }
    }
  }
  const std::pair<const std::vector<Role>*, const std::vector<HostTensor>*> own[] = {
      {&kElRoles, &x.el}, {&kSkRoles, &x.sk}};
  for (const auto& [roles, set] : own) {
    for (size_t i = 0; i < roles->size(); ++i) {
      if (!(*roles)[i].written) {
        EXPECT_EQ((*set)[i].changed_since_snapshot(false), "") << (*roles)[i].name;
      }
    }
  }
}

// Error constructors per runtime source file.
int count_sites(const std::string& file) {
  std::ifstream in(std::string(HATTN_SOURCE_DIR) + "/runtime/src/" + file);
  EXPECT_TRUE(in.good()) << "cannot read runtime/src/" << file;
  std::stringstream text;
  text << in.rdbuf();
  std::string src = text.str();
  // validate.cpp defines invalid() itself: that line is no error site.
  const std::string definition = "Status invalid(const std::string& message)";
  const size_t def = src.find(definition);
  if (def != std::string::npos) src.erase(def, src.find('\n', def) - def);
  // (\s*: a constructor may break the line after the brace, as el.cpp's check_weights does.)
  const std::regex site(R"((\binvalid\(|Status\{\s*StatusCode::|\*err = ))");
  int n = 0;
  for (auto it = std::sregex_iterator(src.begin(), src.end(), site); it != std::sregex_iterator();
       ++it) {
    ++n;
  }
  return n;
}

// The C interface passes each tensor's dtype: a bf16 call through it runs the bf16 kernel and
// writes what hattn::attention writes, bit for bit.
TEST(CInterface, PassesTheDtype) {
  TestRng rng("c_bf16");
  SCOPED_TRACE(rng.description());
  const std::vector<int64_t> shape = {1, 2, 9, 64};
  const int64_t n = int64_t{2} * 9 * 64;
  const Sixteen q = draw_16bit(hattn::DType::bf16, n, rng),
                k = draw_16bit(hattn::DType::bf16, n, rng),
                v = draw_16bit(hattn::DType::bf16, n, rng);
  auto c_tensor = [&](const void* data) {
    hattn_tensor t{};
    t.data = const_cast<void*>(data);
    t.rank = 4;
    t.dtype = HATTN_DTYPE_BF16;
    for (int i = 0; i < 4; ++i) {
      t.shape[i] = shape[static_cast<size_t>(i)];
    }
    t.strides[3] = 1;
    for (int i = 2; i >= 0; --i) {
      t.strides[i] = t.strides[i + 1] * t.shape[i + 1];
    }
    return t;
  };
  std::vector<uint16_t> out_c(static_cast<size_t>(n), 0xffff),
      out_cpp(static_cast<size_t>(n), 0xffff);
  const hattn_tensor tq = c_tensor(q.bits.data()), tk = c_tensor(k.bits.data()),
                     tv = c_tensor(v.bits.data()), to = c_tensor(out_c.data());
  char message[256] = {0};
  ASSERT_EQ(
      hattn_dense_attention(&tq, &tk, &tv, &to, nullptr, 1, 0.f, nullptr, message, sizeof message),
      0)
      << message;
  EXPECT_NE(std::string(message).find("_bf16_"), std::string::npos) << message;
  hattn::AttentionOptions o;
  o.causal = true;
  ASSERT_TRUE(hattn::attention(TensorView::contiguous(q.bits.data(), hattn::DType::bf16, shape),
                               TensorView::contiguous(k.bits.data(), hattn::DType::bf16, shape),
                               TensorView::contiguous(v.bits.data(), hattn::DType::bf16, shape),
                               TensorView::contiguous(out_cpp.data(), hattn::DType::bf16, shape), o)
                  .ok());
  EXPECT_EQ(out_c, out_cpp);
}

TEST(ErrorPaths, EverySiteInTheSourcesHasARow) {
  std::map<std::string, std::set<std::string>> sites;
  for (const Row& row : rows()) sites[row.file].insert(row.site);
  const std::vector<std::string> files = {"validate.cpp",
                                          "attention.cpp",
                                          "topk.cpp",
                                          "loki.cpp",
                                          "loki_basis.cpp",
                                          "dispatch.cpp",
                                          "halide_glue.cpp",
                                          "c_api.cpp",
                                          "cuda_glue.cpp",
                                          "tensor.cpp",
                                          "status.cpp",
                                          "target_select.cpp",
                                          "el.cpp",
                                          "sparsek_scoring.cpp",
                                          "sparsek_mask.cpp",
                                          "sparsek_attention.cpp",
                                          "sparsek_decoder.cpp"};
  for (const std::string& f : files) {
    const size_t unreachable = kUnreachable.count(f) ? kUnreachable.at(f).size() : 0;
    EXPECT_EQ(static_cast<size_t>(count_sites(f)), sites[f].size() + unreachable)
        << "runtime/src/" << f << ": error sites in the source vs rows here (" << sites[f].size()
        << ") + unreachable (" << unreachable << "); add a row for the new error path";
  }
}

}  // namespace
}  // namespace hattn_test
