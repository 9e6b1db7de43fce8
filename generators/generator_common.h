// What every Generator (generators/register_<variant>.cpp) shares: the phase parameter, reading
// the tunables of its table line, and the typical shapes its estimates describe.
#pragma once

#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "Halide.h"
#include "dtype_casts.h"
#include "schedules.h"
#include "table.h"

namespace hattn {

// Not `Phase`: inside a Generator that name is Halide's own GeneratorBase::Phase.
enum class KernelPhase { prefill, decode };

// The map of a GeneratorParam<KernelPhase>: the build and the tuner pass `phase=prefill|decode`,
// and Halide refuses any other value before generate() runs.
inline const std::map<std::string, KernelPhase>& phase_names() {
  static const std::map<std::string, KernelPhase> names{{"prefill", KernelPhase::prefill},
                                                        {"decode", KernelPhase::decode}};
  return names;
}

// The table keys' spelling of each field (schedules/<family>/*.table).
inline std::string phase_name(KernelPhase p) {
  return p == KernelPhase::decode ? "decode" : "prefill";
}
inline std::string head_dim_name(int head_dim) {
  return head_dim > 0 ? "d" + std::to_string(head_dim) : "dany";
}
inline std::string mask_name(bool causal) { return causal ? "causal" : "noncausal"; }
// The dtype as kernel names and tables spell it: f32, bf16, f16.
inline std::string dtype_name(const Halide::Type& t) {
  if (t.is_bfloat()) return "bf16";
  return t.bits() == 16 ? "f16" : "f32";
}

// A kernel's dtype as its name and table key spell it: the stored tensors' dtype, with "kv" when
// the activations (q and out, x and y) stay fp32 over them (bf16kv, f16kv).
inline std::string dtype_name(const Halide::Type& t, bool fp32_query) {
  return dtype_name(t) + (fp32_query ? "kv" : "");
}

// An input read as fp32 (inlined: the conversion happens where the value is loaded; a no-op
// for float32 inputs, whose kernels are unchanged). What lets one algorithm serve every dtype.
// bf16_bits: bf16_casts_as_bits of the target.
inline Halide::Func as_f32(const Halide::Func& f, bool bf16_bits = false) {
  std::vector<Halide::Var> args;
  for (int i = 0; i < f.dimensions(); ++i) args.emplace_back("a" + std::to_string(i));
  Halide::Func g(f.name() + "_f32");
  g(args) = widen_to_f32(f(args), bf16_bits);
  return g;
}

// Whether a bf16 kernel writes its dot products as sums of bf16 pairs accumulated in fp32 (the
// shape of AVX512-BF16's vdpbf16ps): on targets with AVX512-BF16 (Zen 4, Sapphire Rapids), whose
// builds exist only for the kernels that write such products (cmake/HattnKernels.cmake).
inline bool bf16_pair_products(const Halide::Type& dtype, const Halide::Target& t) {
  return dtype == Halide::BFloat(16) && (t.has_feature(Halide::Target::AVX512_Zen4) ||
                                         t.has_feature(Halide::Target::AVX512_SapphireRapids));
}

// The `dtype` GeneratorParam of a variant whose q, k, v and out share one element type:
// float32, bfloat16 or float16 (products accumulate in fp32 whatever it is).
inline void check_dtype(const Halide::Type& t, const char* generator) {
  if (!(t == Halide::Float(32) || t == Halide::BFloat(16) || t == Halide::Float(16))) {
    throw std::invalid_argument(std::string(generator) +
                                ": dtype must be float32, bfloat16 or float16");
  }
}

// A variant's configure() when its inputs and output share the `dtype` GeneratorParam: checked,
// then set on each (q, k, v and out; a paged cache; the FFN's x, weights and y).
template <typename Out, typename... In>
void set_tensor_dtype(const Halide::Type& t, const char* generator, Out& out, In&... inputs) {
  check_dtype(t, generator);
  (inputs.set_type(t), ...);
  out.set_type(t);
}

// The `dtype` and `fp32_query` GeneratorParams of a generator whose activations are always fp32
// and whose stored tensors (weights, memory) may be 16-bit: a 16-bit dtype comes with
// fp32_query=true (the kernel names' bf16kv and f16kv), fp32 without it.
inline void check_stored_dtype(const Halide::Type& t, bool fp32_query, const char* generator) {
  check_dtype(t, generator);
  if (fp32_query != (t != Halide::Float(32))) {
    throw std::invalid_argument(
        std::string(generator) +
        ": a bf16 or f16 dtype (weights, memory) comes with fp32_query=true "
        "(fp32 activations), float32 without it");
  }
}

// The tunables of `key` from the table of `target` under `tables` (the schedules/ folder), with
// `overrides` ("kb:128,tq:2", the tuner's candidates) applied on top.
inline Tunables read_tunables(const Halide::Target& target, const std::string& tables,
                              const TableKey& key, const std::string& overrides) {
  std::vector<std::string> paths;
  for (const std::string& file : tables_for_target(target)) paths.push_back(tables + "/" + file);
  Tunables t = lookup_tunables(paths, key);
  apply_overrides(&t, overrides);
  return t;
}

// The same for a variant with CPU schedules only: a CUDA target is refused here, with a message,
// rather than failing inside a CPU schedule.
inline Tunables read_cpu_tunables(const Halide::Target& target, const std::string& tables,
                                  const TableKey& key, const std::string& overrides) {
  if (target.has_feature(Halide::Target::CUDA)) {
    throw std::runtime_error("hattn: " + key.variant +
                             " has no CUDA schedule yet; build it for a CPU target");
  }
  return read_tunables(target, tables, key, overrides);
}

// A batch's page table (p, b) -> page index, its row length, the page size in tokens and the
// pages in the pool (the paged generators' inputs).
struct PageTable {
  Halide::Func table;
  Halide::Expr pages_per_seq, page, num_pages;
};

// The page table of a paged generator's inputs: its table (p, b) and a page buffer of the pool
// (c, slot, hk, page).
template <typename Table, typename Pages>
PageTable page_table_of(const Table& table, const Pages& pages) {
  return {table, table.dim(0).extent(), pages.dim(1).extent(), pages.dim(3).extent()};
}

// The rows of a paged cache `pages` (c, slot, hk, page), [pages, Hkv, page, C] as the runtime
// describes it (any strides), as a (c, j, hk, b) Func: sequence b's row j lives in page
// table(j / page, b), slot j % page. The runtime checks every page index a length reaches; the
// clamps only give Halide bounds for the data-dependent index.
inline Halide::Func paged_rows(const Halide::Func& pages, const PageTable& t,
                               const std::string& name) {
  Halide::Var c("c"), j("j"), hk("hk"), b("b");
  Halide::Expr page_id = Halide::clamp(
      t.table(Halide::clamp(j / t.page, 0, t.pages_per_seq - 1), b), 0, t.num_pages - 1);
  Halide::Func rows(name);
  rows(c, j, hk, b) = pages(c, j % t.page, hk, page_id);
  return rows;
}

// The head dim as an Expr: compiled in when the kernel is specialized (head_dim > 0), else q's.
inline Halide::Expr head_dim_expr(int head_dim, const Halide::Expr& q_extent) {
  return head_dim > 0 ? Halide::Expr(head_dim) : q_extent;
}

// Estimates only steer the autoscheduler (the Adams2019 baseline in autotune/) and fill Halide's
// metadata; a kernel built with its own schedule ignores them. Every Generator's estimates
// describe one typical model, written here once so that no two variants describe the same input
// differently: kEstimateHeads heads (query and key/value alike) of D = kEstimateHeadDim where D
// is not compiled in, the scale 1/sqrt(D) a caller passes, a prompt of kEstimatePrompt tokens
// (prefill: its queries and keys), a cache of kEstimateCache keys (decode: one query row against
// it), a selection that keeps one candidate in kEstimateKeepOneIn, and around attention a model
// dim of heads x D with a feed-forward layer kEstimateFfnRatio times as wide.
constexpr int kEstimateHeads = 32;
constexpr int kEstimateHeadDim = 128;
constexpr int kEstimatePrompt = 2048;
constexpr int kEstimateCache = 32768;
constexpr int kEstimateKeepOneIn = 8;
constexpr int kEstimateFfnRatio = 4;

// A paged cache's estimates: the decode shape's keys of one sequence in pages of kEstimatePage
// tokens; page_region is a page buffer's ([pages, Hkv, page, channels]).
constexpr int kEstimatePage = 16;

// The attention shape of a phase.
struct EstimateShape {
  int d, lq, lk;
  int heads;    // of q, and of k and v (the estimates assume no grouping)
  float scale;  // 1/sqrt(d)
  int topk;     // keys a selection keeps of lk
};
inline EstimateShape estimate_shape(int head_dim, KernelPhase phase) {
  const bool decode = phase == KernelPhase::decode;
  const int d = head_dim > 0 ? head_dim : kEstimateHeadDim;
  const int lk = decode ? kEstimateCache : kEstimatePrompt;
  return {d,
          decode ? 1 : kEstimatePrompt,
          lk,
          kEstimateHeads,
          1.f / std::sqrt(float(d)),
          lk / kEstimateKeepOneIn};
}
// The layers around attention (el, linear, topk_ffn): the model dim, the feed-forward width and
// the tokens of a prompt.
struct EstimateModel {
  int dm, d_ff, tokens;
};
inline EstimateModel estimate_model() {
  constexpr int dm = kEstimateHeads * kEstimateHeadDim;
  return {dm, kEstimateFfnRatio * dm, kEstimatePrompt};
}
inline Halide::Region page_region(const EstimateShape& e, int channels) {
  return {{0, channels}, {0, kEstimatePage}, {0, e.heads}, {0, e.lk / kEstimatePage}};
}
template <typename Table, typename Lengths>
void set_page_table_estimates(Table& table, Lengths& lengths, const EstimateShape& e) {
  table.set_estimates({{0, e.lk / kEstimatePage}, {0, 1}});
  lengths.set_estimates({{0, 1}});
}
// The region of a [D, L, H, B] tensor of one batch.
inline Halide::Region attention_region(int d, int len, int heads) {
  return {{0, d}, {0, len}, {0, heads}, {0, 1}};
}

}  // namespace hattn
