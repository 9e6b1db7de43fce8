#include "dispatch.h"

#include <algorithm>
#include <sstream>

#include "halide_glue.h"
#include "hattn/kernel_registry.h"

namespace hattn {

const std::vector<KernelEntry>& kernel_table() {
  static const std::vector<KernelEntry> table = [] {
    std::vector<KernelEntry> t;
    const hattn_kernel_registry* r = hattn_registered_kernels();
    for (size_t i = 0; i < r->count; ++i) {
      const hattn_kernel_record& k = r->kernels[i];
      t.push_back({KernelInfo{k.name, k.variant, k.phase, k.causal != 0, k.head_dim, k.dtype,
                              k.family, k.targets, k.lse != 0},
                   k.fn, signature_mismatch(k.metadata ? k.metadata() : nullptr, k.args)});
    }
    return t;
  }();
  return table;
}

std::string signature_mismatch(const halide_filter_metadata_t* metadata, const char* expected) {
  if (metadata == nullptr || expected == nullptr) return "no argument metadata to check";
  std::vector<std::string> want;
  std::stringstream list(expected);
  for (std::string name; std::getline(list, name, ',');) want.push_back(name);
  std::vector<std::string> have;
  for (int i = 0; i < metadata->num_arguments; ++i) {
    std::string name = metadata->arguments[i].name;
    if (name == "__user_context") continue;
    name = name.substr(0, std::min(name.find('$'), name.find("__")));  // "out$5", "out__5"
    have.push_back(name);
  }
  if (have == want) return "";
  std::string got;
  for (const std::string& n : have) got += (got.empty() ? "" : ",") + n;
  return std::string("its arguments (") + got + ") are not hattn/kernel_registry.h's (" + expected +
         "): the generator and the runtime disagree";
}

const std::vector<KernelInfo>& list_kernels() {
  static const std::vector<KernelInfo> infos = [] {
    std::vector<KernelInfo> v;
    for (const KernelEntry& e : kernel_table()) v.push_back(e.info);
    return v;
  }();
  return infos;
}

int decode_threshold() { return static_cast<int>(kDecodeMaxLq); }

namespace {

// The checks a kernel must pass to compute a call, in the order a refusal names the first one it
// fails. Dispatch runs them for every kernel of the variant on every call (a decode on a tiny
// cache is microseconds), so they build no strings; `explain` words a failure when one is needed.
enum class Mismatch { none, signature, variant, dtype, device, no_build, mask, head_dim, lse };

// The first check kernel `e` fails for this call (none: it can compute it). Phase is a preference,
// not a capability: every dense kernel computes every shape correctly.
Mismatch mismatch(const KernelEntry& e, const std::string& variant, const KernelRequest& o) {
  const KernelInfo& k = e.info;
  const bool cuda_kernel = k.family == "cuda";
  if (!e.signature_problem.empty()) return Mismatch::signature;
  if (k.variant != variant) return Mismatch::variant;
  if (k.dtype != o.dtype) return Mismatch::dtype;
  if (cuda_kernel != (o.device == Device::cuda)) return Mismatch::device;
  if (!cuda_kernel && !runs_on_this_cpu(k)) return Mismatch::no_build;
  if (k.causal != o.causal) return Mismatch::mask;
  if (k.head_dim != 0 && k.head_dim != o.head_dim) return Mismatch::head_dim;
  if (o.lse && !k.lse) return Mismatch::lse;
  return Mismatch::none;
}

// Why kernel `e` cannot compute this call, in words (empty: it can).
std::string explain(Mismatch m, const KernelEntry& e, const std::string& variant,
                    const KernelRequest& o) {
  const KernelInfo& k = e.info;
  switch (m) {
    case Mismatch::none:
      return "";
    case Mismatch::signature:
      return e.signature_problem;
    case Mismatch::variant:
      return "variant " + k.variant + ", not " + variant;
    case Mismatch::dtype: {
      // "bf16kv": an fp32 q and out over a bf16 k and v.
      const bool kv = o.dtype.size() > 2 && o.dtype.compare(o.dtype.size() - 2, 2, "kv") == 0;
      return "built for " + k.dtype + " tensors, the call's are " + o.dtype +
             (kv ? " (f32 q and out, " + o.dtype.substr(0, o.dtype.size() - 2) + " k and v)" : "");
    }
    case Mismatch::device:
      return std::string(k.family == "cuda" ? "CUDA kernel" : "CPU kernel") + ", tensors are on " +
             to_string(o.device);
    case Mismatch::no_build:
      return "none of its builds (" + k.target + ") runs on this CPU";
    case Mismatch::mask:
      return std::string("built for ") + (k.causal ? "causal" : "non-causal") + " masks, call is " +
             (o.causal ? "causal" : "non-causal");
    case Mismatch::head_dim:
      return "compiled for D=" + std::to_string(k.head_dim) +
             ", call has D=" + std::to_string(o.head_dim);
    case Mismatch::lse:
      return "computes no log-sum-exp, and lse was requested";
  }
  return "";
}

std::string incapable_reason(const KernelEntry& e, const std::string& variant,
                             const KernelRequest& o) {
  return explain(mismatch(e, variant, o), e, variant, o);
}

// Among capable kernels: one compiled for this exact D beats the generic one; then one without
// the lse output when none was requested (it needs no buffer of final states).
bool preferred(const KernelInfo& a, const KernelInfo& b, const KernelRequest& o) {
  if ((a.head_dim != 0) != (b.head_dim != 0)) return a.head_dim != 0;
  if (!o.lse && a.lse != b.lse) return !a.lse;
  return false;
}

// What the call asked for, in the words of the kernel names: "topk decode causal D=96 on cpu".
std::string asked(const std::string& variant, const KernelRequest& o, const std::string& phase) {
  return variant + (o.has_phases ? " " + phase : "") + (o.causal ? " causal" : "") +
         (o.lse ? " lse" : "") + (o.head_dim > 0 ? " D=" + std::to_string(o.head_dim) : "") + " " +
         o.dtype + " on " + to_string(o.device);
}

// What this program's kernel set holds, one entry per variant, family and dtype with its head
// dims: "kernel set 'mykernels' (VARIANTS dense HEAD_DIMS 64 TARGETS host): dense x86 f32 D=64".
std::string built_summary() {
  const hattn_kernel_registry* r = hattn_registered_kernels();
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;  // "variant family", dims
  for (const KernelEntry& e : kernel_table()) {
    const std::string key = e.info.variant + " " + e.info.family + " " + e.info.dtype;
    const std::string d = e.info.head_dim ? std::to_string(e.info.head_dim) : "any";
    auto g =
        std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return x.first == key; });
    if (g == groups.end()) g = groups.insert(groups.end(), {key, {}});
    if (std::find(g->second.begin(), g->second.end(), d) == g->second.end()) g->second.push_back(d);
  }
  std::ostringstream out;
  out << "kernel set '" << r->set_name << "' (" << r->requested << ") holds";
  if (groups.empty()) out << " no kernels";
  for (size_t i = 0; i < groups.size(); ++i) {
    out << (i ? "; " : " ") << groups[i].first << " D=";
    for (size_t j = 0; j < groups[i].second.size(); ++j)
      out << (j ? "," : "") << groups[i].second[j];
  }
  return out.str();
}

}  // namespace

KernelRequest attention_request(const AttentionShape& shape, bool causal,
                                const std::string& forced) {
  KernelRequest r;
  r.causal = causal;
  r.forced = forced;
  r.has_phases = true;
  r.device = shape.device;
  r.dtype = kernel_dtype(shape);
  r.head_dim = shape.head_dim;
  r.rows = shape.lq;
  return r;
}

Status choose_kernel(const char* variant_name, const KernelRequest& options,
                     const KernelEntry** chosen, std::string* reason) {
  const std::string variant = variant_name;
  const auto& table = kernel_table();
  if (!options.forced.empty()) {
    for (const KernelEntry& e : table) {
      if (e.info.name != options.forced) continue;
      std::string why = incapable_reason(e, variant, options);
      if (!why.empty()) {
        return Status{StatusCode::unsupported,
                      "kernel " + e.info.name + " cannot take this call: " + why};
      }
      *chosen = &e;
      *reason = "forced by options.kernel";
      return Status::success();
    }
    return Status{StatusCode::invalid_argument,
                  "no kernel named '" + options.forced + "' was generated for this program (" +
                      built_summary() + "; see hattn::list_kernels())"};
  }

  const std::string phase = !options.has_phases            ? "prefill"
                            : options.rows <= kDecodeMaxLq ? "decode"
                                                           : "prefill";
  const KernelEntry* best = nullptr;
  int of_variant = 0;
  for (const KernelEntry& e : table) {
    if (e.info.variant != variant) continue;  // other variants: not worth a line each
    ++of_variant;
    if (mismatch(e, variant, options) != Mismatch::none || e.info.phase != phase) continue;
    if (best == nullptr || preferred(e.info, best->info, options)) best = &e;
  }
  // Refused: each kernel of the variant and why, written out only when none can take the call.
  std::string refusals;
  for (size_t i = 0; best == nullptr && i < table.size(); ++i) {
    const KernelEntry& e = table[i];
    if (e.info.variant != variant) continue;
    std::string why = incapable_reason(e, variant, options);
    if (why.empty()) {
      why = e.info.phase + " kernel, but Lq=" + std::to_string(options.rows) + " selects " + phase +
            " (decode when Lq <= " + std::to_string(kDecodeMaxLq) + ")";
    }
    refusals += "\n  " + e.info.name + ": " + why;
  }
  if (of_variant == 0) {
    return Status{StatusCode::unsupported,
                  "no " + variant + " kernel was generated for this program: asked for " +
                      asked(variant, options, phase) + ", and the " + built_summary()};
  }
  if (best == nullptr) {
    return Status{StatusCode::unsupported,
                  "no generated " + variant + " kernel can take this call: asked for " +
                      asked(variant, options, phase) + "; the " + built_summary() + ":" + refusals};
  }
  *chosen = best;
  const std::string d = std::to_string(options.head_dim);
  *reason = phase + " (Lq=" + std::to_string(options.rows) + (phase == "decode" ? " <= " : " > ") +
            std::to_string(kDecodeMaxLq) + "), " + (options.causal ? "causal" : "non-causal") +
            ", " +
            (best->info.head_dim ? "D=" + d + " specialized"
                                 : "generic D (no kernel specialized for D=" + d + ")");
  return Status::success();
}

bool decode_runs_serially(const AttentionShape& shape, int64_t cached_tokens) {
  const int64_t bytes = 2 * cached_tokens * shape.kv_heads * shape.head_dim *
                        static_cast<int64_t>(element_size(shape.kv_dtype));
  return shape.device == Device::cpu && bytes <= kSerialDecodeBytes;
}

// Counted in keys: the runtime does not know a kernel's key block (its table does, and tables
// differ: 128 to 256 keys), and a decode kernel given more splits than it has key blocks leaves
// the extra ones empty, which is still exact.
int choose_decode_splits(const AttentionShape& shape, int requested) {
  // At most one split per this many keys: finer splits only add partial states to merge.
  constexpr int64_t kMinKeysPerSplit = 256;
  // Automatic CPU splits hold at least this many keys (measured with 256-key blocks: four blocks
  // per split keep the per-split merge small next to the streaming).
  constexpr int64_t kMinKeysPerCpuSplit = 1024;
  const int64_t most = std::max<int64_t>(1, (shape.lk + kMinKeysPerSplit - 1) / kMinKeysPerSplit);
  const int64_t max_splits = std::max<int64_t>(1, most * kMinKeysPerSplit / kMinKeysPerCpuSplit);
  if (requested > 0) return static_cast<int>(std::min<int64_t>(requested, most));
  const int64_t rows = shape.batch * shape.q_heads * shape.lq;
  if (shape.device == Device::cuda) {
    // A thread block per (split, row): enough blocks to fill a large GPU several times over
    // (an H100 has 132 SMs), each split at least kMinKeysPerSplit keys.
    const int64_t want = (1024 + rows - 1) / rows;
    return static_cast<int>(std::clamp<int64_t>(want, 1, most));
  }
  // Many more tasks than threads: more streams in flight per core read closer to the memory
  // bandwidth (measured: H=32, Lk=32K decode, 1 split 30 GB/s, 4 splits 32 GB/s of 35 GB/s).
  // A CPU decode task is one split of one kv head (all its query heads and rows at once).
  const int64_t streams = shape.batch * shape.kv_heads;
  const int64_t want = (64 * static_cast<int64_t>(worker_threads()) + streams - 1) / streams;
  return static_cast<int>(std::clamp<int64_t>(want, 1, max_splits));
}

}  // namespace hattn
