// Generators for the topk variant: top-k attention ("topk") and the top-k feed-forward layer
// ("topk_ffn"). Algorithms in topk.cpp, CPU schedules in schedules/cpu/topk_cpu.cpp.
#include <stdexcept>
#include <string>

#include "Halide.h"
#include "generator_common.h"
#include "schedules.h"
#include "table.h"
#include "topk.h"

namespace hattn {
namespace {

using namespace Halide;

// What both top-k attention generators give the algorithm: q (d, i, h, b) and the keys and values
// k, v (d, j, hk, b) as stored, lk keys of kv_heads heads.
template <typename Q>
TopkInputs topk_inputs(const Q& q, const Func& k, const Func& v, const Expr& lk,
                       const Expr& kv_heads, const Expr& scale, const Expr& topk, bool causal,
                       const Type& dtype, int head_dim) {
  TopkInputs in;
  in.q = as_f32(q);
  in.k = as_f32(k);
  in.v = as_f32(v);
  in.q_raw = q;
  in.k_raw = k;
  in.out_type = dtype;
  in.head_dim = head_dim_expr(head_dim, q.dim(0).extent());
  in.lq = q.dim(1).extent();
  in.lk = lk;
  in.q_heads = q.dim(2).extent();
  in.kv_heads = kv_heads;
  in.scale = scale;
  in.topk = max(topk, 1);
  in.causal = causal;
  return in;
}

class TopkAttentionGenerator : public Generator<TopkAttentionGenerator> {
 public:
  GeneratorParam<KernelPhase> phase{"phase", KernelPhase::prefill, phase_names()};
  GeneratorParam<bool> causal{"causal", false};
  GeneratorParam<int> head_dim{"head_dim", 0};  // 0: any D
  GeneratorParam<std::string> tables{"tables", ""};
  GeneratorParam<std::string> tunables{"tunables", ""};
  // q, k, v and out: float32, bfloat16 or float16 (the dtype in the kernel's name); scores,
  // the selection's keys and the softmax are fp32 whatever it is.
  GeneratorParam<Type> dtype{"dtype", Float(32)};

  Input<Buffer<void, 4>> q{"q"};
  Input<Buffer<void, 4>> k{"k"};
  Input<Buffer<void, 4>> v{"v"};
  Input<float> scale{"scale"};
  Input<int> topk{"topk"};
  Output<Buffer<void, 4>> out{"out"};

  void configure() { set_tensor_dtype(dtype, "topk", out, q, k, v); }

  void generate() {
    const bool decode = phase.value() == KernelPhase::decode;
    TableKey key{"topk", phase_name(phase), head_dim_name(head_dim), mask_name(causal),
                 dtype_name(dtype)};
    ScheduleContext ctx{get_target(), head_dim, decode, false,
                        read_cpu_tunables(get_target(), tables, key, tunables)};
    TopkInputs in = topk_inputs(q, k, v, k.dim(1).extent(), k.dim(2).extent(), scale, topk, causal,
                                dtype, head_dim);
    in.pair_dot = !decode && bf16_pair_products(dtype, get_target());
    TopkStages st = topk_attention(in);
    out = st.att.out;

    for (auto* p : {&q, &k, &v}) (*p).dim(0).set_stride(1);
    out.dim(0).set_stride(1);
    Expr d = head_dim_expr(head_dim, q.dim(0).extent());
    if (head_dim > 0) q.dim(0).set_bounds(0, d);
    k.dim(0).set_bounds(0, d);
    v.dim(0).set_bounds(0, d);
    out.dim(0).set_bounds(0, d);

    const EstimateShape s = estimate_shape(head_dim, phase);
    q.set_estimates(attention_region(s.d, s.lq, s.heads));
    k.set_estimates(attention_region(s.d, s.lk, s.heads));
    v.set_estimates(attention_region(s.d, s.lk, s.heads));
    scale.set_estimate(s.scale);
    topk.set_estimate(s.topk);
    out.set_estimates(attention_region(s.d, s.lq, s.heads));
    if (!using_autoscheduler()) schedule_topk_cpu(st, ctx);
  }
};

// Top-k decode over a batch of paged KV caches ("topk_paged"), as dense_paged is to dense: the
// topk stages with the keys read through the page table (paged_rows) and each sequence's own
// length (TopkInputs::key_lengths). Decode only, the topk decode schedule and table line.
class TopkPagedGenerator : public Generator<TopkPagedGenerator> {
 public:
  GeneratorParam<KernelPhase> phase{"phase", KernelPhase::decode, phase_names()};
  GeneratorParam<bool> causal{"causal", false};
  GeneratorParam<int> head_dim{"head_dim", 0};
  GeneratorParam<std::string> tables{"tables", ""};
  GeneratorParam<std::string> tunables{"tunables", ""};
  GeneratorParam<Type> dtype{"dtype", Float(32)};

  Input<Buffer<void, 4>> q{"q"};                       // (d, i, h, b)
  Input<Buffer<void, 4>> k_pages{"k_pages"};           // (d, slot, hk, page)
  Input<Buffer<void, 4>> v_pages{"v_pages"};           // (d, slot, hk, page)
  Input<Buffer<int32_t, 2>> page_table{"page_table"};  // (p, b)
  Input<Buffer<int32_t, 1>> lengths{"lengths"};        // (b)
  Input<float> scale{"scale"};
  Input<int> topk{"topk"};
  Output<Buffer<void, 4>> out{"out"};

  void configure() { set_tensor_dtype(dtype, "topk_paged", out, q, k_pages, v_pages); }

  void generate() {
    if (phase.value() != KernelPhase::decode) {
      throw std::invalid_argument("topk_paged: decode kernels only");
    }
    TableKey key{"topk", "decode", head_dim_name(head_dim), mask_name(causal), dtype_name(dtype)};
    ScheduleContext ctx{get_target(), head_dim, true, false,
                        read_cpu_tunables(get_target(), tables, key, tunables)};
    const PageTable pt = page_table_of(page_table, k_pages);
    Func k_raw = paged_rows(k_pages, pt, "k_paged"), v_raw = paged_rows(v_pages, pt, "v_paged");
    TopkInputs in = topk_inputs(q, k_raw, v_raw, pt.pages_per_seq * pt.page,
                                k_pages.dim(2).extent(), scale, topk, causal, dtype, head_dim);
    in.key_lengths = lengths;
    TopkStages st = topk_attention(in);
    out = st.att.out;

    for (auto* p : {&q, &k_pages, &v_pages}) {
      (*p).dim(0).set_stride(1);
    }
    out.dim(0).set_stride(1);
    Expr d = head_dim_expr(head_dim, q.dim(0).extent());
    if (head_dim > 0) {
      q.dim(0).set_bounds(0, d);
    }
    k_pages.dim(0).set_bounds(0, d);
    v_pages.dim(0).set_bounds(0, d);
    out.dim(0).set_bounds(0, d);

    const EstimateShape e = estimate_shape(head_dim, KernelPhase::decode);
    q.set_estimates(attention_region(e.d, e.lq, e.heads));
    for (auto* p : {&k_pages, &v_pages}) {
      p->set_estimates(page_region(e, e.d));
    }
    set_page_table_estimates(page_table, lengths, e);
    scale.set_estimate(e.scale);
    topk.set_estimate(e.topk);
    out.set_estimates(attention_region(e.d, e.lq, e.heads));
    if (!using_autoscheduler()) {
      schedule_topk_cpu(st, ctx);
    }
  }
};

class TopkFfnGenerator : public Generator<TopkFfnGenerator> {
 public:
  GeneratorParam<std::string> tables{"tables", ""};
  GeneratorParam<std::string> tunables{"tunables", ""};
  // x, w1, w2t and y: float32, bfloat16 or float16 (bf16 weights halve the bytes a token's
  // selected rows cost); the hidden units, the selection and the sums are fp32.
  GeneratorParam<Type> dtype{"dtype", Float(32)};

  Input<Buffer<void, 2>> x{"x"};      // [T, D]
  Input<Buffer<void, 2>> w1{"w1"};    // [d_ff, D]
  Input<Buffer<void, 2>> w2t{"w2t"};  // [d_ff, D] (W2 transposed: the "values")
  Input<int> topk{"topk"};
  Output<Buffer<void, 2>> y{"y"};  // [T, D]

  void configure() { set_tensor_dtype(dtype, "topk_ffn", y, x, w1, w2t); }

  void generate() {
    TableKey key{"topk_ffn", "prefill", "dany", "noncausal", dtype_name(dtype)};
    ScheduleContext ctx{get_target(), 0, false, false,
                        read_cpu_tunables(get_target(), tables, key, tunables)};
    TopkFfnInputs in;
    in.x = as_f32(x);
    in.w1 = as_f32(w1);
    in.w2t = w2t;
    in.x_raw = x;
    in.w1_raw = w1;
    in.pair_dot = bf16_pair_products(dtype, get_target());
    in.out_type = dtype;
    in.model_dim = x.dim(0).extent();
    in.d_ff = w1.dim(1).extent();
    in.tokens = x.dim(1).extent();
    in.topk = max(topk, 1);
    TopkFfnStages st = topk_ffn(in);
    y = st.y;
    for (auto* p : {&x, &w1, &w2t}) (*p).dim(0).set_stride(1);
    y.dim(0).set_stride(1);
    Expr d = x.dim(0).extent();
    w1.dim(0).set_bounds(0, d);
    w2t.dim(0).set_bounds(0, d);
    y.dim(0).set_bounds(0, d);
    const EstimateModel m = estimate_model();
    x.set_estimates({{0, m.dm}, {0, m.tokens}});
    w1.set_estimates({{0, m.dm}, {0, m.d_ff}});
    w2t.set_estimates({{0, m.dm}, {0, m.d_ff}});
    topk.set_estimate(m.d_ff / kEstimateKeepOneIn);
    y.set_estimates({{0, m.dm}, {0, m.tokens}});
    if (!using_autoscheduler()) schedule_topk_ffn_cpu(st, ctx);
  }
};

}  // namespace
}  // namespace hattn

HALIDE_REGISTER_GENERATOR(hattn::TopkAttentionGenerator, topk)
HALIDE_REGISTER_GENERATOR(hattn::TopkPagedGenerator, topk_paged)
HALIDE_REGISTER_GENERATOR(hattn::TopkFfnGenerator, topk_ffn)
