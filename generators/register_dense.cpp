// The Halide Generator for dense attention ("dense"). Each generators/register_<variant>.cpp joins
// one algorithm (generators/<variant>.cpp) with the schedule for the target it is asked to build
// (schedules/<family>/), reading tunables from the family's table (generator_common.h).
// GeneratorParams pick the specialization; together they form the kernel's name.
#include <stdexcept>
#include <string>

#include "Halide.h"
#include "dense.h"
#include "generator_common.h"
#include "schedules.h"
#include "table.h"

namespace hattn {
namespace {

using namespace Halide;

// Whether prefill runs as bf16 pair dot products (DenseInputs::pair_qk): an even, compiled-in
// head dim on a target that has them.
bool bf16_pairs(const Type& dtype, int head_dim, const Target& t) {
  return bf16_pair_products(dtype, t) && head_dim > 0 && head_dim % 2 == 0;
}

// D is contiguous in q, out, lse and the two key/value buffers (k, v or their pages) and equal
// across them; a fixed head dim is compiled in.
void constrain_head_dim(GeneratorInput<Buffer<void, 4>>& q, GeneratorInput<Buffer<void, 4>>& k,
                        GeneratorInput<Buffer<void, 4>>& v, GeneratorOutput<Buffer<void, 4>>& out,
                        GeneratorOutput<Buffer<float, 3>>& lse, int head_dim) {
  for (auto* p : {&q, &k, &v}) (*p).dim(0).set_stride(1);
  out.dim(0).set_stride(1);
  lse.dim(0).set_stride(1);
  Expr d = q.dim(0).extent();
  if (head_dim > 0) {
    d = head_dim;
    q.dim(0).set_bounds(0, d);
  }
  k.dim(0).set_bounds(0, d);
  v.dim(0).set_bounds(0, d);
  out.dim(0).set_bounds(0, d);
}

class DenseAttentionGenerator : public Generator<DenseAttentionGenerator> {
 public:
  GeneratorParam<KernelPhase> phase{"phase", KernelPhase::prefill, phase_names()};
  GeneratorParam<bool> causal{"causal", false};
  // Without lse, prefill writes `out` inside each task; the lse output is then a placeholder
  // (zeros) that the runtime never hands to a caller.
  GeneratorParam<bool> with_lse{"with_lse", true};
  GeneratorParam<int> head_dim{"head_dim", 0};           // 0: any D
  GeneratorParam<std::string> tables{"tables", ""};      // the schedules/ folder
  GeneratorParam<std::string> tunables{"tunables", ""};  // overrides: "kb:128,tq:2"
  // The element type of q, k, v and out (the dtype in the kernel's name): float32, bfloat16 or
  // float16. Whatever it is, products accumulate in fp32, the softmax state and lse are fp32.
  GeneratorParam<Type> dtype{"dtype", Float(32)};
  // Decode over a 16-bit K/V cache with q and out in fp32, as inference engines keep them (the
  // `bf16kv` and `f16kv` kernels): `dtype` is then the cache's alone.
  GeneratorParam<bool> fp32_query{"fp32_query", false};

  Input<Buffer<void, 4>> q{"q"};
  Input<Buffer<void, 4>> k{"k"};
  Input<Buffer<void, 4>> v{"v"};
  Input<float> scale{"scale"};
  Input<int> splits{"splits"};
  Output<Buffer<void, 4>> out{"out"};
  Output<Buffer<float, 3>> lse{"lse"};

  void configure() {
    const Type t = dtype;
    check_dtype(t, "dense");
    if (fp32_query && (t == Float(32) || phase.value() != KernelPhase::decode)) {
      throw std::invalid_argument("dense: fp32_query is for decode over a bf16 or f16 cache");
    }
    const Type qt = fp32_query ? Float(32) : t;
    q.set_type(qt);
    out.set_type(qt);
    for (auto* p : {&k, &v}) p->set_type(t);
  }

  void generate() {
    const bool decode = phase.value() == KernelPhase::decode;
    // Dense has a CUDA schedule: every target's table is read.
    // The kv kernels' tables: `dense.bf16kv`, `dense.f16kv` (or a plain `dense` line).
    TableKey key{"dense", phase_name(phase), head_dim_name(head_dim), mask_name(causal),
                 dtype_name(dtype, fp32_query)};
    ScheduleContext ctx{get_target(), head_dim, decode, with_lse || decode,
                        read_tunables(get_target(), tables, key, tunables)};

    DenseInputs in;
    in.bf16_bits = bf16_casts_as_bits(get_target());
    in.q = as_f32(q, in.bf16_bits);
    in.k = as_f32(k, in.bf16_bits);
    in.v = as_f32(v, in.bf16_bits);
    in.out_type = fp32_query ? Float(32) : Type(dtype);
    in.head_dim = head_dim_expr(head_dim, q.dim(0).extent());
    in.lq = q.dim(1).extent();
    in.lk = k.dim(1).extent();
    in.q_heads = q.dim(2).extent();
    in.kv_heads = k.dim(2).extent();
    in.scale = scale;
    in.splits = max(splits, 1);
    in.causal = causal;
    in.split_keys = decode;
    // bf16 prefill on a CPU with AVX512-BF16 (Zen 4, Sapphire Rapids): q.k and P.V as bf16 pair
    // dot products (vdpbf16ps) on K and V as stored. Decode widens K and V instead (bandwidth-
    // bound: widening measured faster, schedules/cpu/dense_cpu.cpp).
    in.pair_qk = !decode && bf16_pairs(dtype, head_dim, get_target());
    in.pair_pv = in.pair_qk;
    in.q_raw = q;
    in.k_raw = k;
    in.v_raw = v;
    // CPU decode reads each kv head once for its whole group; the CUDA schedule gives each query
    // row its own threads and keeps compile-time query blocks.
    in.pack_groups = decode && !get_target().has_gpu_feature();
    DenseBlocking blocking{in.pack_groups ? 0 : ctx.tunables.get("qb"), ctx.tunables.get("kb")};
    if (!in.pack_groups) {
      blocking.long_query_block = ctx.tunables.get_or("lqb", 0);
      blocking.long_kv_mib = ctx.tunables.get_or("lmb", 0);
    }
    DenseStages st = dense_attention(in, blocking);
    out = st.out;
    if (ctx.with_lse) {
      lse = st.lse;
    } else {
      lse(st.i, st.h, st.b) = 0.f;
    }

    constrain_head_dim(q, k, v, out, lse, head_dim);
    set_estimates(decode);
    if (!using_autoscheduler()) schedule_dense(st, ctx);
  }

 private:
  void set_estimates(bool decode) {
    const EstimateShape s = estimate_shape(head_dim, phase);
    q.set_estimates(attention_region(s.d, s.lq, s.heads));
    k.set_estimates(attention_region(s.d, s.lk, s.heads));
    v.set_estimates(attention_region(s.d, s.lk, s.heads));
    scale.set_estimate(s.scale);
    splits.set_estimate(decode ? 4 : 1);
    out.set_estimates(attention_region(s.d, s.lq, s.heads));
    lse.set_estimates({{0, s.lq}, {0, s.heads}, {0, 1}});
  }
};

// Dense decode over a batch of paged KV caches ("dense_paged"): sequence b's key j lives in
// page page_table(j / page, b), slot j % page, and the sequence holds lengths(b) keys. K and V
// are [pages, Hkv, page, D] as the runtime describes them, any strides (a cache stored
// [pages, page, Hkv, D] is the same buffer with its head and slot strides swapped). The algorithm
// is dense's, with the keys read through the page table and each sequence's own length; a
// contiguous ragged batch is the same call with one page per sequence.
class DensePagedGenerator : public Generator<DensePagedGenerator> {
 public:
  GeneratorParam<KernelPhase> phase{"phase", KernelPhase::decode, phase_names()};
  GeneratorParam<bool> causal{"causal", false};
  GeneratorParam<bool> with_lse{"with_lse", true};
  GeneratorParam<int> head_dim{"head_dim", 0};
  GeneratorParam<std::string> tables{"tables", ""};
  GeneratorParam<std::string> tunables{"tunables", ""};
  GeneratorParam<Type> dtype{"dtype", Float(32)};

  Input<Buffer<void, 4>> q{"q"};              // (d, i, h, b)
  Input<Buffer<void, 4>> k_pages{"k_pages"};  // (d, slot, hk, page)
  Input<Buffer<void, 4>> v_pages{"v_pages"};
  Input<Buffer<int32_t, 2>> page_table{"page_table"};  // (p, b)
  Input<Buffer<int32_t, 1>> lengths{"lengths"};        // (b)
  Input<float> scale{"scale"};
  Input<int> splits{"splits"};
  Output<Buffer<void, 4>> out{"out"};
  Output<Buffer<float, 3>> lse{"lse"};

  void configure() { set_tensor_dtype(dtype, "dense_paged", out, q, k_pages, v_pages); }

  void generate() {
    if (phase.value() != KernelPhase::decode || !with_lse) {
      throw std::invalid_argument("dense_paged: decode kernels with lse only");
    }
    if (get_target().has_gpu_feature()) {
      throw std::invalid_argument("dense_paged: no CUDA schedule yet; build it for a CPU target");
    }
    // The same stages as dense decode, so the same table line: the page lookup adds a few
    // integer instructions per key row, not a different loop structure.
    TableKey key{"dense", "decode", head_dim_name(head_dim), mask_name(causal), dtype_name(dtype)};
    ScheduleContext ctx{get_target(), head_dim, true, true,
                        read_tunables(get_target(), tables, key, tunables)};

    const PageTable pt = page_table_of(page_table, k_pages);
    Func k_raw = paged_rows(k_pages, pt, "k_paged"), v_raw = paged_rows(v_pages, pt, "v_paged");

    DenseInputs in;
    in.q = as_f32(q);
    in.k = as_f32(k_raw);
    in.v = as_f32(v_raw);
    in.q_raw = q;
    in.k_raw = k_raw;
    in.v_raw = v_raw;
    in.out_type = dtype;
    in.head_dim = head_dim_expr(head_dim, q.dim(0).extent());
    in.lq = q.dim(1).extent();
    in.lk = pt.pages_per_seq * pt.page;
    in.key_lengths = lengths;
    in.q_heads = q.dim(2).extent();
    in.kv_heads = k_pages.dim(2).extent();
    in.scale = scale;
    in.splits = max(splits, 1);
    in.causal = causal;
    in.split_keys = true;
    in.pack_groups = true;
    DenseBlocking blocking{0, ctx.tunables.get("kb")};
    DenseStages st = dense_attention(in, blocking);
    out = st.out;
    lse = st.lse;

    constrain_head_dim(q, k_pages, v_pages, out, lse, head_dim);

    const EstimateShape e = estimate_shape(head_dim, KernelPhase::decode);
    q.set_estimates(attention_region(e.d, e.lq, e.heads));
    for (auto* p : {&k_pages, &v_pages}) {
      p->set_estimates(page_region(e, e.d));
    }
    set_page_table_estimates(page_table, lengths, e);
    scale.set_estimate(e.scale);
    splits.set_estimate(4);
    out.set_estimates(attention_region(e.d, e.lq, e.heads));
    lse.set_estimates({{0, e.lq}, {0, e.heads}, {0, 1}});
    if (!using_autoscheduler()) schedule_dense(st, ctx);
  }
};

}  // namespace
}  // namespace hattn

HALIDE_REGISTER_GENERATOR(hattn::DenseAttentionGenerator, dense)
HALIDE_REGISTER_GENERATOR(hattn::DensePagedGenerator, dense_paged)
