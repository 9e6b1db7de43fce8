// `hattn run topk-ffn`: y = relu(x W1^T) W2^T keeping, per token, the k largest pre-activations.
// W2 is read as stored by a framework's Linear(d_ff -> D) layer, [D, d_ff], and transposed once
// here into the [d_ff, D] layout the kernel gathers rows from.
#include <cstdio>

#include "cli_common.h"

namespace hattn_cli {

namespace {

struct FfnArgs {
  std::string x, w1, w2, out;
  int64_t topk = 0;
  std::string dtype = "f32";  // of x, the weights and y
  CommonRunArgs common;
};

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

int run_topk_ffn(const FfnArgs& a) {
  if (a.common.threads > 0) hattn::set_num_threads(a.common.threads);
  hattn::npy::Array x = load(a.x, "x", 2, "[T, D]");
  hattn::npy::Array w1 = load(a.w1, "w1", 2, "[d_ff, D]");
  hattn::npy::Array w2 = load(a.w2, "w2", 2, "[D, d_ff]");
  const int64_t tokens = x.shape[0], dim = x.shape[1], d_ff = w1.shape[0];
  if (w2.shape[0] != dim || w2.shape[1] != d_ff) {
    die(1, a.w2 + ": w2 must be [D, d_ff] = " + shape_text({dim, d_ff}) + " (x is " +
               shape_text(x.shape) + ", w1 is " + shape_text(w1.shape) + "), got " +
               shape_text(w2.shape));
  }
  hattn::npy::Array w2t{{d_ff, dim}, std::vector<float>(w2.data.size()), false};
  for (int64_t r = 0; r < dim; ++r) {
    for (int64_t c = 0; c < d_ff; ++c) w2t.data[c * dim + r] = w2.data[r * d_ff + c];
  }
  // Every tensor in --dtype (bf16|f16: rounded to it in memory; cli_common.h).
  const hattn::DType dtype = parse_dtype(a.dtype);
  std::vector<uint16_t> x16, w1_16, w2t16, y16;
  const hattn::TensorView x_view = as_dtype(x, dtype, &x16), w1_view = as_dtype(w1, dtype, &w1_16),
                          w2t_view = as_dtype(w2t, dtype, &w2t16);
  std::vector<float> y;
  const hattn::TensorView y_view = output_as(dtype, {tokens, dim}, &y, &y16);
  hattn::TopkFfnOptions opt;
  opt.k = a.topk;
  set_common(a.common, &opt);
  hattn::Dispatch chosen;
  const double t = median_seconds(a.common.repeat, [&] {
    return hattn::topk_ffn(x_view, w1_view, w2t_view, y_view, opt, &chosen);
  });
  const double dense_flops = 4.0 * static_cast<double>(tokens * dim * d_ff);
  std::printf("kernel: %s (%s)\ntime: %.3f ms (median of %d), %.1f GFLOP/s of the dense FFN\n",
              chosen.kernel.c_str(), chosen.reason.c_str(), t * 1e3, a.common.repeat,
              dense_flops / t * 1e-9);
  save_output(a.out, dtype, {tokens, dim}, y16, &y);
  if (a.common.verbose) std::printf("wrote %s\n", a.out.c_str());
  return 0;
}

}  // namespace

Action add_run_ffn(CLI::App* run) {
  static FfnArgs args;
  CLI::App* c = run->add_subcommand(
      "topk-ffn", "ReLU feed-forward layer keeping the top-k hidden units per token");
  c->add_option("--x", args.x, "tokens [T, D], float32 .npy")->required();
  c->add_option("--w1", args.w1, "first layer [d_ff, D] (h = x w1^T)")->required();
  c->add_option("--w2", args.w2, "second layer [D, d_ff] (y = relu(h) w2^T)")->required();
  c->add_option("--topk", args.topk, "hidden units kept per token (>= 1)")->required();
  c->add_option("--out", args.out, "output [T, D] .npy to write")->required();
  add_dtype_option(c, &args.dtype);
  add_common_run_options(c, &args.common);
  return [c]() { return *c ? run_topk_ffn(args) : -1; };
}

}  // namespace hattn_cli
