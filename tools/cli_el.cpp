// `hattn run el`: multi-head attention over a shared memory computed the EL way (or, with
// --standard, the standard way: project the memory into K/V, attention(), output projection).
//
// Weights are read from a directory of .npy files in PyTorch's nn.MultiheadAttention
// convention (y = x W^T + b):
//   DIR/wq.npy DIR/wk.npy DIR/wv.npy DIR/wo.npy   [Dm, Dm] (out, in), float32
//   DIR/bq.npy DIR/bk.npy DIR/bv.npy DIR/bo.npy   [Dm], float32; a missing bias file is zero
#include <cstdio>
#include <filesystem>

#include "cli_common.h"

namespace hattn_cli {

namespace {

struct ElArgs {
  std::string x, memory, weights, out;
  int64_t heads = 0, beam = 1;
  bool causal = false, standard = false;
  double scale = 0;
  std::vector<int32_t> lengths;
  std::string dtype = "f32";  // of x, the memory, the weights and y
  CommonRunArgs common;
};

struct LoadedWeights {
  hattn::npy::Array w[4], b[4];
  bool has_bias[4] = {false, false, false, false};
  std::vector<uint16_t> w16[4], b16[4];  // --dtype bf16|f16: the weights rounded
};

void load_weights(const std::string& dir, LoadedWeights* lw) {
  if (!std::filesystem::is_directory(dir)) {
    die(1, dir +
               ": --weights must be a directory holding wq.npy wk.npy wv.npy wo.npy "
               "(and optionally bq.npy bk.npy bv.npy bo.npy)");
  }
  const char* names[4] = {"q", "k", "v", "o"};
  for (int i = 0; i < 4; ++i) {
    const std::string w = dir + "/w" + names[i] + ".npy";
    lw->w[i] = load(w, ("w" + std::string(names[i])).c_str(), 2, "[Dm, Dm] (out, in)");
    const std::string b = dir + "/b" + names[i] + ".npy";
    if (std::filesystem::exists(b)) {
      lw->b[i] = load(b, ("b" + std::string(names[i])).c_str(), 1, "[Dm]");
      lw->has_bias[i] = true;
    }
  }
}

// The weights in `dtype` (bf16|f16: rounded to it in memory; cli_common.h).
hattn::MhaWeights weight_views(LoadedWeights& lw, hattn::DType dtype) {
  hattn::MhaWeights m;
  hattn::TensorView* ws[4] = {&m.wq, &m.wk, &m.wv, &m.wo};
  hattn::TensorView* bs[4] = {&m.bq, &m.bk, &m.bv, &m.bo};
  for (int i = 0; i < 4; ++i) {
    *ws[i] = as_dtype(lw.w[i], dtype, &lw.w16[i]);
    if (lw.has_bias[i]) *bs[i] = as_dtype(lw.b[i], dtype, &lw.b16[i]);
  }
  return m;
}

int run_el(const ElArgs& a) {
  if (a.common.threads > 0) hattn::set_num_threads(a.common.threads);
  hattn::npy::Array x = load(a.x, "x", 3, "[B * beam, T, Dm]");
  hattn::npy::Array mem = load(a.memory, "memory", 3, "[B, N, Dm]");
  LoadedWeights lw;
  load_weights(a.weights, &lw);
  hattn::ElOptions o;
  o.heads = a.heads;
  o.beam = a.beam;
  o.causal = a.causal;
  set_common(a.common, &o);
  set_scale(a.scale, &o);
  if (!a.lengths.empty()) {
    if (static_cast<int64_t>(a.lengths.size()) != mem.shape[0]) {
      die(1, "--lengths has " + std::to_string(a.lengths.size()) +
                 " values; the memory has B=" + std::to_string(mem.shape[0]) + " samples");
    }
    o.key_lengths = a.lengths.data();
  }
  // x, the memory, the weights and y in --dtype (the kernels keep every activation fp32).
  const hattn::DType dtype = parse_dtype(a.dtype);
  std::vector<uint16_t> x16, mem16, y16;
  const hattn::TensorView x_view = as_dtype(x, dtype, &x16),
                          mem_view = as_dtype(mem, dtype, &mem16);
  std::vector<float> y;
  const hattn::TensorView y_view = output_as(dtype, x.shape, &y, &y16);
  const hattn::MhaWeights w = weight_views(lw, dtype);
  hattn::Dispatch chosen;
  const double t = median_seconds(a.common.repeat, [&] {
    return a.standard ? hattn::mha_attention(x_view, mem_view, w, y_view, o)
                      : hattn::el_attention(x_view, mem_view, w, y_view, o, &chosen);
  });
  const char* path = a.standard ? "standard MHA (projects the memory each call)" : "EL";
  std::printf("path: %s%s%s\ntime: %.3f ms (median of %d)\n", path,
              chosen.kernel.empty() ? "" : ", kernel ", chosen.kernel.c_str(), t * 1e3,
              a.common.repeat);
  save_output(a.out, dtype, x.shape, y16, &y);
  if (a.common.verbose) std::printf("wrote %s\n", a.out.c_str());
  return 0;
}

}  // namespace

Action add_run_el(CLI::App* run) {
  static ElArgs args;
  CLI::App* c = run->add_subcommand(
      "el", "EL-attention: multi-head attention over a memory shared by all heads and beams");
  c->add_option("--x", args.x, "queries [B * beam, T, Dm], float32 .npy")->required();
  c->add_option("--memory", args.memory, "shared memory Hs [B, N, Dm], float32 .npy")->required();
  c->add_option("--weights", args.weights,
                "directory with wq/wk/wv/wo.npy [Dm, Dm] (out, in) and optional bq/bk/bv/bo.npy "
                "[Dm]")
      ->required();
  c->add_option("--heads", args.heads, "attention heads H (Dm % H == 0)")->required();
  c->add_option("--beam", args.beam, "beams per sample (x has B * beam rows)");
  c->add_flag("--causal", args.causal, "token t of T sees memory rows j <= t + (len - T)");
  c->add_option("--lengths", args.lengths, "visible memory rows per sample, e.g. 1024,900")
      ->delimiter(',');
  c->add_option("--scale", args.scale, "softmax scale (default 1/sqrt(Dm / H))");
  c->add_flag("--standard", args.standard,
              "run the standard path instead (K/V projection + attention + output projection)");
  c->add_option("--out", args.out, "output [B * beam, T, Dm] .npy to write")->required();
  add_dtype_option(c, &args.dtype);
  add_common_run_options(c, &args.common);
  return [c]() { return *c ? run_el(args) : -1; };
}

}  // namespace hattn_cli
