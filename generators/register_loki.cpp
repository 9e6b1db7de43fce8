// The Generator for Loki attention ("loki"). Algorithm in loki.cpp, CPU schedules in
// schedules/cpu/loki_cpu.cpp.
#include <stdexcept>
#include <string>

#include "Halide.h"
#include "generator_common.h"
#include "loki.h"
#include "schedules.h"
#include "table.h"

namespace hattn {
namespace {

using namespace Halide;

// What both Loki generators give the algorithm: q (d, i, h, b), the rotated keys, their leading
// channels and the values (c, j, hk, b) as stored, lk keys of kv_heads heads, the basis.
template <typename Q>
LokiInputs loki_inputs(const Q& q, const Func& k, const Func& k_lead, const Func& v,
                       const Func& basis, const Expr& lk, const Expr& kv_heads, const Expr& scale,
                       const Expr& rank, const Expr& topk, bool causal, const Type& dtype,
                       int head_dim) {
  LokiInputs in;
  in.q = as_f32(q);
  in.k = as_f32(k);
  in.k_lead = as_f32(k_lead);
  in.v = as_f32(v);
  in.basis = basis;
  in.out_type = dtype;
  in.head_dim = head_dim_expr(head_dim, q.dim(0).extent());
  in.lq = q.dim(1).extent();
  in.lk = lk;
  in.q_heads = q.dim(2).extent();
  in.kv_heads = kv_heads;
  in.scale = scale;
  in.rank = clamp(rank, 1, in.head_dim);
  in.topk = max(topk, 1);
  in.causal = causal;
  return in;
}

class LokiAttentionGenerator : public Generator<LokiAttentionGenerator> {
 public:
  GeneratorParam<KernelPhase> phase{"phase", KernelPhase::decode, phase_names()};
  GeneratorParam<bool> causal{"causal", false};
  GeneratorParam<int> head_dim{"head_dim", 0};  // 0: any D
  GeneratorParam<std::string> tables{"tables", ""};
  GeneratorParam<std::string> tunables{"tunables", ""};
  // q, k, k_lead, v and out: float32, bfloat16 or float16 (the dtype in the kernel's name); the
  // basis, the rotated query, the scores and the softmax are fp32 whatever it is.
  GeneratorParam<Type> dtype{"dtype", Float(32)};

  Input<Buffer<void, 4>> q{"q"};            // [B, Hq, Lq, D], not rotated
  Input<Buffer<void, 4>> k{"k"};            // [B, Hkv, Lk, D], rotated into the basis
  Input<Buffer<void, 4>> k_lead{"k_lead"};  // [B, Hkv, Lk, >= r]: k's leading channels
  Input<Buffer<void, 4>> v{"v"};            // [B, Hkv, Lk, D]
  Input<Buffer<float, 3>> basis{"basis"};   // [Hkv, D, D]: basis[h][e][c], component e of axis c
  Input<float> scale{"scale"};
  Input<int> rank{"rank"};  // r, 1 <= r <= D
  Input<int> topk{"topk"};  // k >= 1
  Output<Buffer<void, 4>> out{"out"};

  void configure() { set_tensor_dtype(dtype, "loki", out, q, k, k_lead, v); }

  void generate() {
    const bool decode = phase.value() == KernelPhase::decode;
    TableKey key{"loki", phase_name(phase), head_dim_name(head_dim), mask_name(causal),
                 dtype_name(dtype)};
    ScheduleContext ctx{get_target(), head_dim, decode, false,
                        read_cpu_tunables(get_target(), tables, key, tunables)};

    const Expr d = head_dim_expr(head_dim, q.dim(0).extent());
    LokiInputs in = loki_inputs(q, k, k_lead, v, basis, k.dim(1).extent(), k.dim(2).extent(), scale,
                                rank, topk, causal, dtype, head_dim);
    LokiStages st = loki_attention(in);
    out = st.att.out;

    for (auto* p : {&q, &k, &v}) (*p).dim(0).set_stride(1).set_bounds(0, d);
    k_lead.dim(0).set_stride(1);
    basis.dim(0).set_stride(1).set_bounds(0, d);
    basis.dim(1).set_bounds(0, d);
    out.dim(0).set_stride(1).set_bounds(0, d);

    const EstimateShape s = estimate_shape(head_dim, phase);
    const int rank_estimate = s.d / 4;  // Loki's usual rank: a quarter of the channels
    q.set_estimates(attention_region(s.d, s.lq, s.heads));
    k.set_estimates(attention_region(s.d, s.lk, s.heads));
    v.set_estimates(attention_region(s.d, s.lk, s.heads));
    k_lead.set_estimates(attention_region(rank_estimate, s.lk, s.heads));
    basis.set_estimates({{0, s.d}, {0, s.d}, {0, s.heads}});
    scale.set_estimate(s.scale);
    rank.set_estimate(rank_estimate);
    topk.set_estimate(s.topk);
    out.set_estimates(attention_region(s.d, s.lq, s.heads));
    if (!using_autoscheduler()) schedule_loki_cpu(st, ctx);
  }
};

// Loki decode over a batch of paged caches ("loki_paged"), as dense_paged is to dense: the Loki
// stages with the rotated keys, their leading channels and the values read through the page
// table (paged_rows; the three share the pool's pages and slots) and each sequence's own length
// (LokiInputs::key_lengths). Decode only, the Loki decode schedule and table line.
class LokiPagedGenerator : public Generator<LokiPagedGenerator> {
 public:
  GeneratorParam<KernelPhase> phase{"phase", KernelPhase::decode, phase_names()};
  GeneratorParam<bool> causal{"causal", false};
  GeneratorParam<int> head_dim{"head_dim", 0};
  GeneratorParam<std::string> tables{"tables", ""};
  GeneratorParam<std::string> tunables{"tunables", ""};
  GeneratorParam<Type> dtype{"dtype", Float(32)};

  Input<Buffer<void, 4>> q{"q"};                       // (d, i, h, b), not rotated
  Input<Buffer<void, 4>> k_pages{"k_pages"};           // (d, slot, hk, page), rotated
  Input<Buffer<void, 4>> lead_pages{"lead_pages"};     // (c, slot, hk, page), c < R
  Input<Buffer<void, 4>> v_pages{"v_pages"};           // (d, slot, hk, page)
  Input<Buffer<int32_t, 2>> page_table{"page_table"};  // (p, b)
  Input<Buffer<int32_t, 1>> lengths{"lengths"};        // (b)
  Input<Buffer<float, 3>> basis{"basis"};              // [Hkv, D, D]
  Input<float> scale{"scale"};
  Input<int> rank{"rank"};
  Input<int> topk{"topk"};
  Output<Buffer<void, 4>> out{"out"};

  void configure() { set_tensor_dtype(dtype, "loki_paged", out, q, k_pages, lead_pages, v_pages); }

  void generate() {
    if (phase.value() != KernelPhase::decode) {
      throw std::invalid_argument("loki_paged: decode kernels only");
    }
    TableKey key{"loki", "decode", head_dim_name(head_dim), mask_name(causal), dtype_name(dtype)};
    ScheduleContext ctx{get_target(), head_dim, true, false,
                        read_cpu_tunables(get_target(), tables, key, tunables)};
    const PageTable pt = page_table_of(page_table, k_pages);
    const Expr d = head_dim_expr(head_dim, q.dim(0).extent());
    LokiInputs in =
        loki_inputs(q, paged_rows(k_pages, pt, "k_paged"), paged_rows(lead_pages, pt, "lead_paged"),
                    paged_rows(v_pages, pt, "v_paged"), basis, pt.pages_per_seq * pt.page,
                    k_pages.dim(2).extent(), scale, rank, topk, causal, dtype, head_dim);
    in.key_lengths = lengths;
    LokiStages st = loki_attention(in);
    out = st.att.out;

    for (auto* p : {&q, &k_pages, &v_pages}) {
      (*p).dim(0).set_stride(1).set_bounds(0, d);
    }
    lead_pages.dim(0).set_stride(1);
    basis.dim(0).set_stride(1).set_bounds(0, d);
    basis.dim(1).set_bounds(0, d);
    out.dim(0).set_stride(1).set_bounds(0, d);

    const EstimateShape e = estimate_shape(head_dim, KernelPhase::decode);
    const int rank_estimate = e.d / 4;
    q.set_estimates(attention_region(e.d, e.lq, e.heads));
    for (auto* p : {&k_pages, &v_pages}) {
      p->set_estimates(page_region(e, e.d));
    }
    lead_pages.set_estimates(page_region(e, rank_estimate));
    set_page_table_estimates(page_table, lengths, e);
    basis.set_estimates({{0, e.d}, {0, e.d}, {0, e.heads}});
    scale.set_estimate(e.scale);
    rank.set_estimate(rank_estimate);
    topk.set_estimate(e.topk);
    out.set_estimates(attention_region(e.d, e.lq, e.heads));
    if (!using_autoscheduler()) {
      schedule_loki_cpu(st, ctx);
    }
  }
};

}  // namespace
}  // namespace hattn

HALIDE_REGISTER_GENERATOR(hattn::LokiAttentionGenerator, loki)
HALIDE_REGISTER_GENERATOR(hattn::LokiPagedGenerator, loki_paged)
