// What every Generator (generators/register_<variant>.cpp) shares: the phase parameter, reading
// the tunables of its table line, and the typical shapes its estimates describe.
#pragma once

#include <map>
#include <stdexcept>
#include <string>

#include "Halide.h"
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

// The tunables of `key` from the table of `target` under `tables` (the schedules/ folder), with
// `overrides` ("kb:128,tq:2", the tuner's candidates) applied on top.
inline Tunables read_tunables(const Halide::Target& target, const std::string& tables,
                              const TableKey& key, const std::string& overrides) {
  Tunables t = lookup_tunables(tables + "/" + table_for_target(target), key);
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

// The head dim as an Expr: compiled in when the kernel is specialized (head_dim > 0), else q's.
inline Halide::Expr head_dim_expr(int head_dim, const Halide::Expr& q_extent) {
  return head_dim > 0 ? Halide::Expr(head_dim) : q_extent;
}

// Estimates only steer the autoscheduler (the Adams2019 baseline in autotune/); a kernel built
// with its own schedule ignores them. The typical attention shape of a phase: a long prompt for
// prefill, one row against a long cache for decode, D = 128 where D is not compiled in.
struct EstimateShape {
  int d, lq, lk;
};
inline EstimateShape estimate_shape(int head_dim, KernelPhase phase) {
  const bool decode = phase == KernelPhase::decode;
  return {head_dim > 0 ? head_dim : 128, decode ? 1 : 2048, decode ? 32768 : 2048};
}
// The region of a [D, L, H, B] tensor of one batch.
inline Halide::Region attention_region(int d, int len, int heads) {
  return {{0, d}, {0, len}, {0, heads}, {0, 1}};
}

}  // namespace hattn
