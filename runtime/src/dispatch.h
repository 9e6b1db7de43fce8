// The dispatch table: every compiled kernel (from the generated manifest), the rule that picks
// one for a call, or refuses with the reason each kernel could not take it, and the one path by
// which every variant calls the kernel it was given.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "HalideRuntime.h"
#include "halide_glue.h"
#include "hattn/hattn.h"
#include "hattn/kernel_registry.h"
#include "validate.h"

namespace hattn {

// Each variant's kernel signature (hattn/kernel_registry.h, checked against every generated
// kernel when the registration source compiles) tied to the variant's name in the manifest.
template <typename Fn>
struct VariantOf;
#define HATTN_VARIANT_OF(v)                 \
  template <>                               \
  struct VariantOf<hattn_##v##_fn> {        \
    static constexpr const char* name = #v; \
  };
HATTN_KERNEL_VARIANTS(HATTN_VARIANT_OF)
#undef HATTN_VARIANT_OF

// Whether one of a CPU kernel's builds runs on this CPU (selected_build(kernel) is not empty),
// without building a string: dispatch asks it of candidate kernels on every call.
bool runs_on_this_cpu(const KernelInfo& kernel);
// Builds passed over under limit_isa() so far (each time Halide's wrapper or selected_build()
// asked about one): what lets a test see that the cap reached the kernels' own dispatch.
int64_t isa_limit_refusals();

struct KernelEntry {
  using AnyFn = void (*)();
  KernelInfo info;
  AnyFn fn;  // called only through Kernel<Fn>, Fn being info.variant's signature
  // Non-empty when the kernel's argument names (Halide's metadata) differ from its variant's
  // HATTN_ARGS_<variant>: the kernel is never called, and refusals quote this.
  std::string signature_problem;
};

// What a call asks of a kernel, whatever the kind of call.
struct KernelRequest {
  bool causal = false;
  bool lse = false;             // the caller wants the log-sum-exp
  std::string forced;           // a kernel name the caller forced ("" = choose)
  bool has_phases = false;      // prefill and decode kernels, chosen by `rows`
  Device device = Device::cpu;  // where the call's tensors are
  std::string dtype = "f32";    // their element type, as kernel names spell it
  int64_t head_dim = 0;         // the D a kernel may be specialized for (0: the call has none)
  int64_t rows = 0;             // query rows per head (Lq), which choose the phase
};

// The request of an attention call of `shape`.
KernelRequest attention_request(const AttentionShape& shape, bool causal,
                                const std::string& forced);

// A kernel's arguments as its signature takes them: buffers by descriptor, scalars as they are
// (no conversions: each scalar must already have the signature's type).
inline halide_buffer_t* kernel_arg(HalideBuffer& b) { return b.get(); }
inline float kernel_arg(float x) { return x; }
inline int32_t kernel_arg(int32_t x) { return x; }
inline bool kernel_arg(bool x) { return x; }

// A chosen kernel of the variant whose signature is Fn. call() is the one way the runtime runs a
// kernel: handlers installed, the typed entry point called with the call's context, Halide's
// error mapped to a Status. The compiler checks the arguments against Fn.
template <typename Fn>
class Kernel {
 public:
  Kernel() = default;
  explicit Kernel(const KernelEntry* entry) : entry_(entry) {}
  const KernelInfo& info() const { return entry_->info; }
  const std::string& name() const { return entry_->info.name; }

  template <typename... Args>
  Status call(CallContext& ctx, Args&&... args) const {
    install_halide_handlers();
    const int rc = reinterpret_cast<Fn>(entry_->fn)(&ctx, kernel_arg(args)...);
    if (rc != 0) return kernel_failed(name(), rc, ctx);
    return Status::success();
  }
  template <typename... Args>
  Status call(Args&&... args) const {
    CallContext ctx;
    return call(ctx, std::forward<Args>(args)...);
  }

 private:
  const KernelEntry* entry_ = nullptr;
};

// Picks a kernel of `variant` for the request, or refuses saying why each kernel could not.
Status choose_kernel(const char* variant, const KernelRequest& request, const KernelEntry** chosen,
                     std::string* reason);
template <typename Fn>
Status choose_kernel(const KernelRequest& request, Kernel<Fn>* chosen, std::string* reason) {
  const KernelEntry* entry = nullptr;
  Status s = choose_kernel(VariantOf<Fn>::name, request, &entry, reason);
  if (s.ok()) *chosen = Kernel<Fn>(entry);
  return s;
}

const std::vector<KernelEntry>& kernel_table();

// "" when `metadata`'s arguments are named `expected` (comma-separated) in that order (Halide's
// uniquifying suffixes such as "out$5" ignored), else what differs.
std::string signature_mismatch(const halide_filter_metadata_t* metadata, const char* expected);

// Lq at or below which the decode kernels are chosen. Measured (AVX-512, 2 threads, H=8, D=128,
// Lk=16K): decode vs prefill kernel 5.1/19.9 ms at Lq=1, 16.0/20.2 at Lq=8, 29.5/20.0 at Lq=16.
constexpr int64_t kDecodeMaxLq = 8;

// Key splits for a decode call: enough independent tasks to keep every thread busy, each split at
// least a few key blocks long.
int choose_decode_splits(const AttentionShape& shape, int requested);

// Whether a CPU decode call over `cached_tokens` keys (summed over the batch) of `shape`'s kv heads
// runs on the calling thread (CallContext::serial). Waking Halide's sleeping worker costs 10-15 us
// on a VM: a decode call on a 16-key cache (Hq = 32, Hkv = 8, D = 128, 128 KiB of K and V in fp32)
// took 14 or 28-30 us, bimodal, on the 2-core Zen 4, more than its whole work. Up to
// kSerialDecodeBytes of K and V, one thread reads the cache in less than a wake-up.
constexpr int64_t kSerialDecodeBytes = int64_t{192} << 10;
bool decode_runs_serially(const AttentionShape& shape, int64_t cached_tokens);

}  // namespace hattn
