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

// Valid tensors of each variant; a row breaks one thing.
struct Fixture {
  AttnShape s{1, 2, 1, 3, 5, 16};
  std::vector<HostTensor> dense, ffn, loki, lse;
  Fixture() {
    TestRng rng("error_paths");
    dense = make_tensors(variant_named("dense"), s, rng);
    ffn = make_tensors(variant_named("topk_ffn"), s, rng);
    loki = make_tensors(variant_named("loki"), s, rng);
    lse.emplace_back(std::vector<int64_t>{1, 2, 3}, Layout::kContiguous);
  }
  std::vector<TensorView> d() const { return views_of(variant_named("dense"), dense); }
  std::vector<TensorView> f() const { return views_of(variant_named("topk_ffn"), ffn); }
  std::vector<TensorView> l() const { return views_of(variant_named("loki"), loki); }
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

// The C interface's refusals (it converts its structs before calling attention()).
Status c_call(const hattn_tensor* q) {
  hattn_tensor t{};
  char message[256] = {0};
  const int rc = hattn_dense_attention(q, &t, &t, &t, nullptr, 0, 0.f, nullptr, message,
                                       sizeof message);
  return Status{static_cast<StatusCode>(rc), message};
}

struct Row {
  std::string file;  // runtime/src/<file>
  std::string site;  // one error return in it (several rows may exercise one site)
  std::function<Status(const Fixture&)> call;
  StatusCode code;
  std::string phrase;  // the message must contain it
};

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
  add("validate.cpp", "rank", [](F x) { auto t = x.d(); t[0].rank = 3; return dense(t); }, bad,
      "q must have rank 4 (B, H, L, D), got rank 3");
  add("validate.cpp", "null", [](F x) { auto t = x.d(); t[1].data = nullptr; return dense(t); },
      bad, "k has a null data pointer");
  add("validate.cpp", "misaligned",
      [](F x) { auto t = x.d(); t[2].data = static_cast<char*>(t[2].data) + 2; return dense(t); },
      bad, "is misaligned: fp32 tensors must be aligned to 4 bytes");
  add("validate.cpp", "dtype", [](F x) { auto t = x.d(); t[0].dtype = DType::bf16; return dense(t); },
      unsup, "q has dtype bf16; this build of hattn has fp32 kernels only");
  add("validate.cpp", "device_value",
      [](F x) { auto t = x.d(); t[3].device = static_cast<Device>(7); return dense(t); }, bad,
      "out has an unknown device value 7");
  add("validate.cpp", "size_le_0", [](F x) { auto t = x.d(); t[1].shape[2] = 0; return dense(t); },
      bad, "k has a zero-size dimension L = 0");
  add("validate.cpp", "size_le_0", [](F x) { auto t = x.d(); t[1].shape[0] = -2; return dense(t); },
      bad, "k has a negative dimension B = -2");
  add("validate.cpp", "size_gt_int32",
      [](F x) { auto t = x.d(); t[0].shape[1] = int64_t{1} << 31; return dense(t); }, bad,
      "q dimension H = 2147483648 exceeds 2^31-1");
  add("validate.cpp", "stride_range",
      [](F x) { auto t = x.d(); t[0].strides[1] = -16; return dense(t); }, bad,
      "q stride of H = -16 is not supported (strides must be in [0, 2^31-1])");
  add("validate.cpp", "int32_indexing",
      [](F x) { auto t = x.d(); t[1].shape[0] = 1 << 30; t[1].strides[0] = 0; return dense(t); },
      bad, "has more than 2^31-1 elements; hattn's kernels index with 32 bits");
  add("validate.cpp", "int32_indexing",
      [](F x) { auto t = x.d(); t[3].strides[1] = INT32_MAX; return dense(t); }, bad,
      "has an element offset beyond 2^31-1");
  add("validate.cpp", "innermost_stride",
      [](F x) { auto t = x.d(); t[2].strides[3] = 2; t[2].strides[2] = 32; t[2].strides[1] = 160; t[2].strides[0] = 160; return dense(t); },
      bad, "v must be contiguous in its last dimension D (stride 1)");
  add("validate.cpp", "self_alias", [](F x) { auto t = x.d(); t[3].strides[2] = 0; return dense(t); },
      bad, "out is written but its strides make elements alias each other");
  // validate.cpp: the call.
  add("validate.cpp", "one_device",
      [](F x) { auto t = x.d(); t[2].device = Device::cuda; return dense(t); }, bad,
      "q is on cpu but v is on cuda; every tensor of a call must be on one device");
  add("validate.cpp", "head_dim",
      [](F x) { auto t = x.d(); t[1].shape[3] = 8; t[2].shape[3] = 8; return dense(t); }, bad,
      "head dim D differs: q [1, 2, 3, 16], k [1, 1, 5, 8], v [1, 1, 5, 8]");
  add("validate.cpp", "kv_shape", [](F x) { auto t = x.d(); t[2].shape[2] = 4; return dense(t); },
      bad, "k and v must have the same shape, got k [1, 1, 5, 16] and v [1, 1, 4, 16]");
  add("validate.cpp", "kv_shape", [](F x) { auto t = x.l(); t[2].shape[2] = 4; return loki(t); },
      bad, "k_rot and v must have the same shape");
  add("validate.cpp", "out_shape", [](F x) { auto t = x.d(); t[3].shape[2] = 2; return dense(t); },
      bad, "out must have q's shape [1, 2, 3, 16], got [1, 2, 2, 16]");
  add("validate.cpp", "batch",
      [](F x) { auto t = x.d(); t[1].shape[0] = 2; t[2].shape[0] = 2; return dense(t); }, bad,
      "batch B differs: q [1, 2, 3, 16], k [2, 1, 5, 16]");
  add("validate.cpp", "heads",
      [](F x) { auto t = x.d(); t[1].shape[1] = 3; t[2].shape[1] = 3; return dense(t); }, bad,
      "query heads Hq = 2 must be a multiple of key/value heads Hkv = 3");
  add("validate.cpp", "out_overlaps",
      [](F x) { auto t = x.d(); t[3].data = t[0].data; return dense(t); }, bad,
      "out overlaps q in memory; the output must not alias an input");
  add("validate.cpp", "scale",
      [](F x) { hattn::AttentionOptions o; o.has_scale = true; o.scale = kNaN; return dense(x.d(), o); },
      bad, "scale must be finite and > 0, got nan");
  add("validate.cpp", "decode_splits",
      [](F x) { hattn::AttentionOptions o; o.decode_splits = -4; return dense(x.d(), o); }, bad,
      "decode_splits must be >= 0 (0 = automatic), got -4");
  add("validate.cpp", "lse_shape",
      [](F x) {
        TensorView lse = TensorView::contiguous(x.lse[0].data(), {1, 2, 2});
        hattn::AttentionOptions o;
        o.lse = &lse;
        return dense(x.d(), o);
      },
      bad, "lse must have shape [B, Hq, Lq] = [1, 2, 3], got [1, 2, 2]");
  add("validate.cpp", "lse_overlaps",
      [](F x) {
        auto t = x.d();
        TensorView lse = TensorView::contiguous(static_cast<float*>(t[0].data), {1, 2, 3});
        hattn::AttentionOptions o;
        o.lse = &lse;
        return dense(t, o);
      },
      bad, "lse overlaps another tensor in memory");
  add("validate.cpp", "lse_device",
      [](F x) {
        TensorView lse = x.lse[0].view();
        lse.device = Device::cuda;
        hattn::AttentionOptions o;
        o.lse = &lse;
        return dense(x.d(), o);
      },
      bad, "lse is on cuda but q is on cpu; every tensor of a call must be on one device");
  add("validate.cpp", "check_finite_cuda",
      [](F x) { hattn::AttentionOptions o; o.check_finite = true; return dense(all_cuda(x.d()), o); },
      unsup, "check_finite scans host memory and is not available for CUDA tensors");
  add("validate.cpp", "non_finite",
      [](F x) {
        Fixture copy = x;
        copy.dense[1].at_flat(7) = kNaN;
        hattn::AttentionOptions o;
        o.check_finite = true;
        return dense(copy.d(), o);
      },
      StatusCode::non_finite_input, "k holds a non-finite value (nan) at [0, 0, 0, 7]");
  add("validate.cpp", "check_k", [](F x) { return topk(x.d(), 0); }, bad,
      "k (keys kept per row) must be >= 1, got 0");
  add("validate.cpp", "check_k", [](F x) { return ffn(x.f(), -3); }, bad,
      "k (hidden units kept per row) must be >= 1, got -3");
  add("validate.cpp", "cpu_only", [](F x) { return topk(all_cuda(x.d())); }, unsup,
      "topk attention has CPU kernels only; tensors are on cuda");

  // attention.cpp: CUDA tensors without a usable device (skipped where one is usable).
  add("attention.cpp", "no_device", [](F x) { return dense(all_cuda(x.d())); },
      StatusCode::no_device, "cannot run on CUDA: ");

  // topk.cpp: topk_ffn.
  add("topk.cpp", "ffn_cpu_only", [](F x) { return ffn(all_cuda(x.f())); }, unsup,
      "topk_ffn has CPU kernels only");
  add("topk.cpp", "ffn_model_dim", [](F x) { auto t = x.f(); t[1].shape[1] = 8; return ffn(t); },
      bad, "model dim D differs: x has D=16, w1 [d_ff, D] = [5, 8], w2t [d_ff, D] = [5, 16]");
  add("topk.cpp", "ffn_d_ff", [](F x) { auto t = x.f(); t[2].shape[0] = 4; return ffn(t); }, bad,
      "w1 and w2t must have the same d_ff, got 5 and 4");
  add("topk.cpp", "ffn_y_shape", [](F x) { auto t = x.f(); t[3].shape[0] = 2; return ffn(t); },
      bad, "y must have x's shape [3, 16]");
  add("topk.cpp", "ffn_y_overlaps", [](F x) { auto t = x.f(); t[3].data = t[1].data; return ffn(t); },
      bad, "y overlaps w1 in memory");

  // loki.cpp.
  add("loki.cpp", "rank_both",
      [](F x) { auto o = loki_opts(); o.rank_fraction = 0.5; return loki(x.l(), o); }, bad,
      "give the Loki rank as rank or as rank_fraction, not both");
  add("loki.cpp", "rank_fraction",
      [](F x) { auto o = loki_opts(); o.rank = 0; o.rank_fraction = 2; return loki(x.l(), o); },
      bad, "Loki rank: set rank in [1, D] or rank_fraction in (0, 1], got rank=0 and rank_fraction=2.000000");
  add("loki.cpp", "rank_range", [](F x) { auto o = loki_opts(); o.rank = 17; return loki(x.l(), o); },
      bad, "Loki rank r=17 is outside [1, D=16]");
  add("loki.cpp", "k_both",
      [](F x) { auto o = loki_opts(); o.k_fraction = 0.5; return loki(x.l(), o); }, bad,
      "give the Loki top-k count as k or as k_fraction, not both");
  add("loki.cpp", "k_fraction",
      [](F x) { auto o = loki_opts(); o.k = 0; o.k_fraction = -1; return loki(x.l(), o); }, bad,
      "Loki k_fraction must be in (0, 1], got -1.000000");
  add("loki.cpp", "basis_shape", [](F x) { auto t = x.l(); t[3].shape[0] = 2; return loki(t); },
      bad, "basis must be [Hkv, D, D] = [1, 16, 16], got");
  add("loki.cpp", "basis_device",
      [](F x) { auto t = x.l(); t[3].device = Device::cuda; return loki(t); }, unsup,
      "loki attention has CPU kernels only; basis is on cuda");
  add("loki.cpp", "lead_device",
      [](F x) {
        TensorView lead = x.loki[1].view();
        lead.device = Device::cuda;
        auto o = loki_opts();
        o.k_lead = &lead;
        return loki(x.l(), o);
      },
      unsup, "k_lead must be in host (cpu) memory");
  add("loki.cpp", "lead_shape",
      [](F x) {
        TensorView lead = x.loki[1].view();
        lead.shape[2] = 4;
        auto o = loki_opts();
        o.k_lead = &lead;
        return loki(x.l(), o);
      },
      bad, "k_lead must be [B, Hkv, Lk, R] with k_rot's B, Hkv, Lk");
  add("loki.cpp", "lead_channels",
      [](F x) {
        TensorView lead = x.loki[1].view();
        lead.shape[3] = 3;  // r = 4 needs R >= 4
        auto o = loki_opts();
        o.k_lead = &lead;
        return loki(x.l(), o);
      },
      bad, "k_lead holds R=3 channels; it needs r=4 <= R <= D=16");
  add("loki.cpp", "out_overlaps_lead",
      [](F x) {
        auto t = x.l();
        TensorView lead = TensorView::contiguous(static_cast<float*>(t[4].data), {1, 1, 5, 4});
        auto o = loki_opts();
        o.k_lead = &lead;
        return loki(t, o);
      },
      bad, "out overlaps k_lead in memory");
  add("loki.cpp", "out_overlaps_basis",
      [](F x) { auto t = x.l(); t[4].data = t[3].data; return loki(t); }, bad,
      "out overlaps basis in memory");
  add("loki.cpp", "basis_not_orthonormal",
      [](F x) { Fixture c = x; c.loki[3].at_flat(5) += 0.01f; return loki(c.l()); }, bad,
      "(the basis must be orthonormal; LokiOptions::check_basis)");

  // loki_basis.cpp: loki_check_basis (public, hattn/loki_prep.h).
  const auto basis = [](F x) { return x.loki[3].view(); };
  add("loki_basis.cpp", "rank",
      [=](F x) { auto b = basis(x); b.rank = 2; return hattn::loki_check_basis(b, 1e-4); }, bad,
      "basis must have rank 3 [Hkv, D, D] or 4 [L, Hkv, D, D], got rank 2");
  add("loki_basis.cpp", "null",
      [=](F x) { auto b = basis(x); b.data = nullptr; return hattn::loki_check_basis(b, 1e-4); },
      bad, "basis has a null data pointer");
  add("loki_basis.cpp", "dtype",
      [=](F x) { auto b = basis(x); b.dtype = DType::f16; return hattn::loki_check_basis(b, 1e-4); },
      bad, "basis has dtype f16; it must be f32");
  add("loki_basis.cpp", "device",
      [=](F x) { auto b = basis(x); b.device = Device::cuda; return hattn::loki_check_basis(b, 1e-4); },
      bad, "basis is on device cuda; the check reads host (cpu) memory only");
  add("loki_basis.cpp", "square",
      [=](F x) { auto b = basis(x); b.shape[2] = 8; return hattn::loki_check_basis(b, 1e-4); }, bad,
      "basis must be square per head (..., D, D)");
  add("loki_basis.cpp", "tolerance",
      [=](F x) { return hattn::loki_check_basis(basis(x), -1.0); }, bad,
      "tolerance must be finite and >= 0, got -1");
  add("loki_basis.cpp", "not_orthonormal",
      [](F x) {
        Fixture c = x;
        c.loki[3].at_flat(0) = kNaN;
        return hattn::loki_check_basis(c.loki[3].view(), 1e-4);
      },
      bad, "basis is not orthonormal: head 0: max |P^T P - I| = inf exceeds the tolerance 0.0001 (non-finite entries)");

  // dispatch.cpp.
  add("dispatch.cpp", "forced_incapable",
      [](F x) {
        hattn::AttentionOptions o;
        o.kernel = "topk_prefill_noncausal_dany_f32_" + cpu_family();
        return dense(x.d(), o);
      },
      unsup, "cannot take this call: variant topk, not dense");
  add("dispatch.cpp", "no_such_kernel",
      [](F x) { hattn::TopkOptions o; o.k = 2; o.kernel = "nope"; auto t = x.d(); return hattn::topk_attention(t[0], t[1], t[2], t[3], o); },
      bad, "no kernel named 'nope' was generated for this program");

  // halide_glue.cpp: a kernel that fails (here: its scratch allocation) is a kernel_error
  // with Halide's message, not a crash.
  add("halide_glue.cpp", "kernel_failed",
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
        std::vector<HostTensor> t = make_tensors(variant_named("dense"), {1, 2, 1, 40, 50, 16}, rng);
        HostTensor big_lse({1, 2, 40}, Layout::kContiguous);
        TensorView big = big_lse.view();
        o.lse = &big;
        Status s = dense(views_of(variant_named("dense"), t), o);
        halide_set_custom_malloc(saved);
        return s;
      },
      StatusCode::kernel_error, "failed (Halide error");

  // c_api.cpp: the C interface's own conversions.
  add("c_api.cpp", "null_tensor", [](F) { return c_call(nullptr); }, bad, "q is NULL");
  add("c_api.cpp", "rank",
      [](F) { hattn_tensor q{}; q.rank = 5; return c_call(&q); }, bad,
      "q has rank 5 (1..4 allowed)");
  add("c_api.cpp", "device",
      [](F) { hattn_tensor q{}; q.rank = 4; q.device = 9; return c_call(&q); }, bad,
      "q has unknown device 9");
  return r;
}

// Error sites no public call can reach in this build, and why.
const std::map<std::string, std::vector<std::string>> kUnreachable = {
    {"dispatch.cpp",
     {"no kernels of the variant: every entry point's variant has kernels in every build "
      "(cmake/HattnKernels.cmake); reachable only in a build whose kernel matrix lacks one",
      "no capable kernel: each variant has generic-D kernels for both masks and phases, and an "
      "SSE4.1 / NEON build every such CPU runs; reachable only where a CPU runs none of a "
      "kernel's builds"}},
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
  const std::regex site(R"((\binvalid\(|Status\{StatusCode::|\*err = ))");
  int n = 0;
  for (auto it = std::sregex_iterator(src.begin(), src.end(), site); it != std::sregex_iterator();
       ++it) {
    ++n;
  }
  return n;
}

TEST(ErrorPaths, EverySiteInTheSourcesHasARow) {
  std::map<std::string, std::set<std::string>> sites;
  for (const Row& row : rows()) sites[row.file].insert(row.site);
  const std::vector<std::string> files = {"validate.cpp",  "attention.cpp",  "topk.cpp",
                                          "loki.cpp",      "loki_basis.cpp", "dispatch.cpp",
                                          "halide_glue.cpp", "c_api.cpp",    "cuda_glue.cpp",
                                          "tensor.cpp",    "status.cpp",     "target_select.cpp"};
  for (const std::string& f : files) {
    const size_t unreachable = kUnreachable.count(f) ? kUnreachable.at(f).size() : 0;
    EXPECT_EQ(static_cast<size_t>(count_sites(f)), sites[f].size() + unreachable)
        << "runtime/src/" << f << ": error sites in the source vs rows here (" << sites[f].size()
        << ") + unreachable (" << unreachable << "); add a row for the new error path";
  }
}

}  // namespace
}  // namespace hattn_test
