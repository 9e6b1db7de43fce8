// Generators for SPARSEK (Lou et al. 2024): the attention over window + selected keys ("sparsek")
// and the SparseK operator alone ("sparsek_mask"). Algorithms in sparsek.cpp, CPU schedules in
// schedules/cpu/sparsek_cpu.cpp. No CUDA schedule yet (as for topk and loki).
#include <stdexcept>
#include <string>

#include "Halide.h"
#include "generator_common.h"
#include "schedules.h"
#include "sparsek.h"
#include "table.h"

namespace hattn {
namespace {

using namespace Halide;

class SparsekAttentionGenerator : public Generator<SparsekAttentionGenerator> {
 public:
  // One phase: a prefill call and a decode step over the bounded cache are the same per-row
  // computation (k + w slots per row), so decode needs no kernel of its own.
  GeneratorParam<KernelPhase> phase{"phase", KernelPhase::prefill, phase_names()};
  GeneratorParam<bool> causal{"causal", true};  // sparsek is causal by construction
  GeneratorParam<int> head_dim{"head_dim", 0};  // 0: any D
  GeneratorParam<std::string> tables{"tables", ""};
  GeneratorParam<std::string> tunables{"tunables", ""};
  // q, k, v and out: float32, bfloat16 or float16 (the dtype in the kernel's name); scores, gates
  // and the softmax are fp32 whatever it is.
  GeneratorParam<Type> dtype{"dtype", Float(32)};

  Input<Buffer<void, 4>> q{"q"};                     // [B, Hq, Lq, D]
  Input<Buffer<void, 4>> k{"k"};                     // [B, Hkv, Lk, D]
  Input<Buffer<void, 4>> v{"v"};                     // [B, Hkv, Lk, D]
  Input<Buffer<int32_t, 4>> sel_index{"sel_index"};  // [B, Hkv, Lq, S]
  Input<Buffer<float, 4>> sel_gate{"sel_gate"};      // [B, Hkv, Lq, S]
  Input<Buffer<int32_t, 3>> sel_count{"sel_count"};  // [B, Hkv, Lq]
  Input<float> scale{"scale"};
  Input<int> window{"window"};
  Input<int> q_pos0{"q_pos0"};
  Input<int> ring{"ring"};
  Input<int> gate_logit{"gate_logit"};
  Output<Buffer<void, 4>> out{"out"};

  void configure() { set_tensor_dtype(dtype, "sparsek", out, q, k, v); }

  void generate() {
    if (phase.value() != KernelPhase::prefill || !causal) {
      throw std::runtime_error("sparsek: only phase=prefill causal=true is defined");
    }
    TableKey key{"sparsek", "prefill", head_dim_name(head_dim), "causal", dtype_name(dtype)};
    ScheduleContext ctx{get_target(), head_dim, false, false,
                        read_cpu_tunables(get_target(), tables, key, tunables)};
    const Expr d = head_dim_expr(head_dim, q.dim(0).extent());
    SparsekInputs in;
    in.q = as_f32(q);
    in.k = as_f32(k);
    in.v = as_f32(v);
    in.out_type = dtype;
    in.sel_index = sel_index;
    in.sel_gate = sel_gate;
    in.sel_count = sel_count;
    in.head_dim = d;
    in.lk = k.dim(1).extent();
    in.sel_slots = sel_index.dim(0).extent();
    in.q_heads = q.dim(2).extent();
    in.kv_heads = k.dim(2).extent();
    in.scale = scale;
    in.window = max(window, 0);
    in.q_pos0 = q_pos0;
    in.ring = ring;
    in.gate_logit = gate_logit;
    SparsekStages st = sparsek_attention(in);
    out = st.att.out;

    for (auto* p : {&q, &k, &v}) (*p).dim(0).set_stride(1).set_bounds(0, d);
    sel_index.dim(0).set_stride(1);
    sel_gate.dim(0).set_stride(1);
    out.dim(0).set_stride(1).set_bounds(0, d);

    const EstimateShape s = estimate_shape(head_dim, KernelPhase::prefill);
    q.set_estimates(attention_region(s.d, s.lq, s.heads));
    k.set_estimates(attention_region(s.d, s.lk, s.heads));
    v.set_estimates(attention_region(s.d, s.lk, s.heads));
    sel_index.set_estimates(attention_region(s.topk, s.lq, s.heads));
    sel_gate.set_estimates(attention_region(s.topk, s.lq, s.heads));
    sel_count.set_estimates({{0, s.lq}, {0, s.heads}, {0, 1}});
    scale.set_estimate(s.scale);
    window.set_estimate(s.topk);  // as many recent keys as selected ones
    q_pos0.set_estimate(0);
    ring.set_estimate(0);
    gate_logit.set_estimate(0);
    out.set_estimates(attention_region(s.d, s.lq, s.heads));
    if (!using_autoscheduler()) schedule_sparsek_cpu(st, ctx);
  }
};

class SparsekMaskGenerator : public Generator<SparsekMaskGenerator> {
 public:
  GeneratorParam<std::string> tables{"tables", ""};
  GeneratorParam<std::string> tunables{"tunables", ""};

  Input<Buffer<float, 2>> z{"z"};         // [rows, m]
  Input<Buffer<int32_t, 1>> len{"len"};   // [rows]: valid columns of each row
  Input<int> budget{"budget"};            // k >= 0
  Output<Buffer<float, 2>> mask{"mask"};  // [rows, m]
  Output<Buffer<float, 1>> tau{"tau"};    // [rows]

  void generate() {
    TableKey key{"sparsek", "mask", "dany", "noncausal"};
    ScheduleContext ctx{get_target(), 0, false, false,
                        read_cpu_tunables(get_target(), tables, key, tunables)};
    SparsekMaskStages st = sparsek_mask(z, len, z.dim(0).extent(), max(budget, 0));
    mask = st.mask;
    tau = st.tau;
    z.dim(0).set_stride(1);
    mask.dim(0).set_stride(1).set_bounds(0, z.dim(0).extent());
    const EstimateShape s = estimate_shape(0, KernelPhase::prefill);  // a row of scores per query
    z.set_estimates({{0, s.lk}, {0, s.lq}});
    len.set_estimates({{0, s.lq}});
    budget.set_estimate(s.topk);
    mask.set_estimates({{0, s.lk}, {0, s.lq}});
    tau.set_estimates({{0, s.lq}});
    if (!using_autoscheduler()) schedule_sparsek_mask_cpu(st, ctx);
  }
};

}  // namespace
}  // namespace hattn

HALIDE_REGISTER_GENERATOR(hattn::SparsekAttentionGenerator, sparsek)
HALIDE_REGISTER_GENERATOR(hattn::SparsekMaskGenerator, sparsek_mask)
