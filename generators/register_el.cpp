// The Generators for EL-attention ("el") and the linear layer ("linear") that EL and the standard
// multi-head path share. Algorithms in el.cpp, CPU schedules in schedules/cpu/el_cpu.cpp.
#include <string>

#include "Halide.h"
#include "el.h"
#include "generator_common.h"
#include "schedules.h"
#include "table.h"

namespace hattn {
namespace {

using namespace Halide;

class ElAttentionGenerator : public Generator<ElAttentionGenerator> {
 public:
  GeneratorParam<std::string> tables{"tables", ""};
  GeneratorParam<std::string> tunables{"tunables", ""};
  // The memory and the weights: float32, or bfloat16 / float16 with fp32_query (q and out stay
  // fp32: the kernel names' bf16kv, f16kv). Every product and sum is fp32.
  GeneratorParam<Type> dtype{"dtype", Float(32)};
  GeneratorParam<bool> fp32_query{"fp32_query", false};

  Input<Buffer<float, 3>> q{"q"};                // [B * beam, T, Dm]: s * (x Wq^T + bq)
  Input<Buffer<void, 3>> hs{"hs"};               // [B, N, Dm]
  Input<Buffer<void, 2>> wk{"wk"};               // [Dm, Dm]
  Input<Buffer<void, 2>> wv{"wv"};               // [Dm, Dm]
  Input<Buffer<void, 1>> bv{"bv"};               // [Dm]
  Input<Buffer<int32_t, 1>> lengths{"lengths"};  // [B], each in [0, N]
  Input<int> heads{"heads"};
  Input<int> beam{"beam"};
  Input<bool> causal{"causal"};
  Output<Buffer<float, 3>> out{"out"};  // [B * beam, T, Dm]: concat_h(o_h), before Wo

  void configure() {
    check_stored_dtype(dtype, fp32_query, "el");
    hs.set_type(dtype);
    wk.set_type(dtype);
    wv.set_type(dtype);
    bv.set_type(dtype);
  }

  void generate() {
    // One kernel serves every phase and mask (run-time inputs): one table line, keyed as prefill.
    ScheduleContext ctx{get_target(), 0, false, false,
                        read_cpu_tunables(get_target(), tables,
                                          TableKey{"el", "prefill", "dany", "noncausal",
                                                   dtype_name(dtype, fp32_query)},
                                          tunables)};
    // Dm is a multiple of 16 (the runtime refuses others): written so, the vector reductions
    // over it need no tail predicate (measured: predicated loads in every inner step).
    const Expr dm = (q.dim(0).extent() / 16) * 16;
    ElInputs in;
    in.q = q;
    in.hs = as_f32(hs);
    in.wk = as_f32(wk);
    in.wv = as_f32(wv);
    in.bv = as_f32(bv);
    in.lengths = lengths;
    in.model_dim = dm;
    in.heads = heads;
    in.tokens = q.dim(1).extent();
    in.x_rows = q.dim(2).extent();
    in.beam = beam;
    in.memory_len = hs.dim(1).extent();
    in.causal = causal;
    ElStages st = el_attention(in);
    out = st.out;

    q.dim(0).set_stride(1).set_bounds(0, dm);
    hs.dim(0).set_stride(1).set_bounds(0, dm);
    for (auto* p : {&wk, &wv}) {
      (*p).dim(0).set_stride(1).set_bounds(0, dm);
      (*p).dim(1).set_bounds(0, dm);
    }
    bv.dim(0).set_bounds(0, dm);
    out.dim(0).set_stride(1).set_bounds(0, dm);

    // One decoding step (a token per row) of `samples` x `beam_width` rows, each sample's
    // hidden states a prompt long.
    const EstimateModel m = estimate_model();
    const int samples = 8, beam_width = 4;
    q.set_estimates({{0, m.dm}, {0, 1}, {0, samples * beam_width}});
    hs.set_estimates({{0, m.dm}, {0, m.tokens}, {0, samples}});
    wk.set_estimates({{0, m.dm}, {0, m.dm}});
    wv.set_estimates({{0, m.dm}, {0, m.dm}});
    bv.set_estimates({{0, m.dm}});
    lengths.set_estimates({{0, samples}});
    heads.set_estimate(kEstimateHeads);
    beam.set_estimate(beam_width);
    causal.set_estimate(false);
    out.set_estimates({{0, m.dm}, {0, 1}, {0, samples * beam_width}});
    if (!using_autoscheduler()) schedule_el_cpu(st, ctx);
  }
};

class LinearGenerator : public Generator<LinearGenerator> {
 public:
  GeneratorParam<std::string> tables{"tables", ""};
  GeneratorParam<std::string> tunables{"tunables", ""};
  // W and the bias: float32, or bfloat16 / float16 with fp32_query (x and y stay fp32).
  GeneratorParam<Type> dtype{"dtype", Float(32)};
  GeneratorParam<bool> fp32_query{"fp32_query", false};

  Input<Buffer<float, 2>> x{"x"};       // [rows, in]
  Input<Buffer<void, 2>> w{"w"};        // [out, in]
  Input<Buffer<void, 1>> bias{"bias"};  // [out]
  Input<float> scale{"scale"};
  Output<Buffer<float, 2>> y{"y"};  // [rows, out]: scale * (x W^T + bias)

  void configure() {
    check_stored_dtype(dtype, fp32_query, "linear");
    w.set_type(dtype);
    bias.set_type(dtype);
  }

  void generate() {
    ScheduleContext ctx{get_target(), 0, false, false,
                        read_cpu_tunables(get_target(), tables,
                                          TableKey{"linear", "prefill", "dany", "noncausal",
                                                   dtype_name(dtype, fp32_query)},
                                          tunables)};
    LinearInputs in;
    in.x = x;
    in.w = as_f32(w);
    in.bias = as_f32(bias);
    in.in_dim = (x.dim(0).extent() / 16) * 16;  // a multiple of 16 (see el above)
    in.out_dim = w.dim(1).extent();
    in.rows = x.dim(1).extent();
    in.scale = scale;
    LinearStages st = linear_layer(in);
    y = st.y;
    x.dim(0).set_stride(1);
    x.dim(0).set_bounds(0, in.in_dim);
    w.dim(0).set_stride(1).set_bounds(0, in.in_dim);
    bias.dim(0).set_bounds(0, w.dim(1).extent());
    y.dim(0).set_stride(1).set_bounds(0, w.dim(1).extent());
    y.dim(1).set_bounds(0, x.dim(1).extent());

    // The projection of a prompt's tokens, e.g. Q scaled by 1/sqrt(D) (EL-attention's input).
    const EstimateModel m = estimate_model();
    x.set_estimates({{0, m.dm}, {0, m.tokens}});
    w.set_estimates({{0, m.dm}, {0, m.dm}});
    bias.set_estimates({{0, m.dm}});
    scale.set_estimate(estimate_shape(0, KernelPhase::prefill).scale);
    y.set_estimates({{0, m.dm}, {0, m.tokens}});
    if (!using_autoscheduler()) schedule_linear_cpu(st, ctx);
  }
};

}  // namespace
}  // namespace hattn

HALIDE_REGISTER_GENERATOR(hattn::ElAttentionGenerator, el)
HALIDE_REGISTER_GENERATOR(hattn::LinearGenerator, linear)
