// `hattn run dense`, `hattn run topk` and `hattn run loki`: q, k, v in [B, H, L, D] .npy files,
// out written as .npy.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "cli_common.h"

namespace hattn_cli {

namespace {

struct AttentionArgs {
  std::string q, k, v, out, lse;
  bool causal = false;
  double scale = 0;
  int splits = 0;
  int64_t topk = 0;
  // loki
  std::string basis;
  int64_t layer = -1;  // of a per-layer basis [L, Hkv, D, D]
  int64_t rank = 0;
  double rank_fraction = 0, topk_fraction = 0;
  bool no_check_basis = false, copy_lead = false;
  std::string k_lead;         // [B, Hkv, Lk, R] from `hattn rotate --lead-out`
  std::string dtype = "f32";  // f32, bf16, f16 (dense also bf16kv, f16kv)
  CommonRunArgs common;
};

constexpr const char* kLayout = "[B, H, L, D]";

struct Loaded {
  hattn::npy::Array q, k, v;
  std::vector<float> out;
};

Loaded load_qkv(const AttentionArgs& a) {
  if (a.common.threads > 0) hattn::set_num_threads(a.common.threads);
  Loaded l{load(a.q, "q", 4, kLayout), load(a.k, "k", 4, kLayout), load(a.v, "v", 4, kLayout), {}};
  l.out.resize(l.q.data.size());
  return l;
}

// q, k, v and out in the dtype of --dtype (bf16|f16: inputs rounded to it in memory, out
// widened back or written as float16 .npy; bf16kv|f16kv: only k and v rounded; cli_common.h).
struct Typed {
  hattn::DType kv_dtype, q_dtype;
  std::vector<uint16_t> q16, k16, v16, out16;
  hattn::TensorView q, k, v, out;
  Typed(const std::string& name, Loaded* l)
      : kv_dtype(parse_dtype(name)),
        q_dtype(fp32_query(name) ? hattn::DType::f32 : kv_dtype),
        q(as_dtype(l->q, q_dtype, &q16)),
        k(as_dtype(l->k, kv_dtype, &k16)),
        v(as_dtype(l->v, kv_dtype, &v16)),
        out(output_as(q_dtype, l->q.shape, &l->out, &out16)) {}
  void save(const std::string& path, Loaded* l) {
    save_output(path, q_dtype, l->q.shape, out16, &l->out);
  }
};

double attention_flops(const Loaded& l, bool causal) {
  return 4.0 * static_cast<double>(l.q.shape[0] * l.q.shape[1] * l.q.shape[3]) *
         visible_pairs(l.q.shape[2], l.k.shape[2], causal);
}

int run_dense(const AttentionArgs& a) {
  Loaded l = load_qkv(a);
  hattn::AttentionOptions opt;
  opt.causal = a.causal;
  set_common(a.common, &opt);
  opt.decode_splits = a.splits;
  set_scale(a.scale, &opt);
  const std::vector<int64_t> lse_shape = {l.q.shape[0], l.q.shape[1], l.q.shape[2]};
  std::vector<float> lse;
  hattn::TensorView lse_view;
  if (!a.lse.empty()) {
    lse.resize(static_cast<size_t>(lse_shape[0] * lse_shape[1] * lse_shape[2]));
    lse_view = hattn::TensorView::contiguous(lse.data(), lse_shape);
    opt.lse = &lse_view;
  }
  Typed x(a.dtype, &l);
  hattn::Dispatch chosen;
  const double t = median_seconds(
      a.common.repeat, [&] { return hattn::attention(x.q, x.k, x.v, x.out, opt, &chosen); });
  print_timing(chosen, t, a.common.repeat, attention_flops(l, a.causal));
  x.save(a.out, &l);
  if (!a.lse.empty()) save(a.lse, lse_shape, lse.data());
  if (a.common.verbose) {
    std::printf("wrote %s%s%s\n", a.out.c_str(), a.lse.empty() ? "" : " and ", a.lse.c_str());
  }
  return 0;
}

int run_topk(const AttentionArgs& a) {
  Loaded l = load_qkv(a);
  hattn::TopkOptions opt;
  opt.k = a.topk;
  opt.causal = a.causal;
  set_common(a.common, &opt);
  set_scale(a.scale, &opt);
  Typed x(a.dtype, &l);
  hattn::Dispatch chosen;
  const double t = median_seconds(
      a.common.repeat, [&] { return hattn::topk_attention(x.q, x.k, x.v, x.out, opt, &chosen); });
  // GFLOP/s of the dense work, so the rate compares directly with `hattn run dense`.
  print_timing(chosen, t, a.common.repeat, attention_flops(l, a.causal));
  x.save(a.out, &l);
  if (a.common.verbose) {
    const int64_t lk = l.k.shape[2];
    if (a.topk >= lk) {
      std::printf("k=%lld >= Lk=%lld: clamped, the result is exact dense attention\n",
                  static_cast<long long>(a.topk), static_cast<long long>(lk));
    } else if (a.causal) {
      std::printf("k=%lld; causal rows that see fewer than k keys use all they see\n",
                  static_cast<long long>(a.topk));
    }
    std::printf("wrote %s\n", a.out.c_str());
  }
  return 0;
}

int run_loki(const AttentionArgs& a) {
  Loaded l = load_qkv(a);
  const LayerBasis basis = load_basis(a.basis, a.layer);
  hattn::LokiOptions opt;
  opt.rank = a.rank;
  opt.rank_fraction = a.rank_fraction;
  opt.k = a.topk;
  opt.k_fraction = a.topk_fraction;
  opt.causal = a.causal;
  set_common(a.common, &opt);
  opt.check_basis = !a.no_check_basis;
  set_scale(a.scale, &opt);
  // --copy-lead: the first r channels of the rotated keys copied contiguous (LokiOptions::k_lead),
  // as a decode loop would keep them next to the cache; r must be given absolutely for this.
  // Either lead is in the call's dtype, as the cache is.
  hattn::npy::Array lead;
  std::vector<uint16_t> lead16;
  hattn::TensorView lead_view;
  if (a.copy_lead) {
    if (a.rank < 1 || a.rank > l.k.shape[3]) die(2, "--copy-lead needs --rank in [1, D]");
    const int64_t rows = l.k.shape[0] * l.k.shape[1] * l.k.shape[2], d = l.k.shape[3];
    lead.shape = {l.k.shape[0], l.k.shape[1], l.k.shape[2], a.rank};
    lead.data.resize(static_cast<size_t>(rows * a.rank));
    for (int64_t j = 0; j < rows; ++j) {
      for (int64_t c = 0; c < a.rank; ++c) {
        lead.data[static_cast<size_t>(j * a.rank + c)] = l.k.data[static_cast<size_t>(j * d + c)];
      }
    }
  } else if (!a.k_lead.empty()) {  // the library checks its shape against k_rot and r
    lead = load(a.k_lead, "k_lead", 4, "[B, Hkv, Lk, R]");
  }
  Typed x(a.dtype, &l);
  if (!lead.shape.empty()) {
    lead_view = as_dtype(lead, x.kv_dtype, &lead16);
    opt.k_lead = &lead_view;
  }
  hattn::Dispatch chosen;
  const double t = median_seconds(a.common.repeat, [&] {
    return hattn::loki_attention(x.q, x.k, x.v, basis.view, x.out, opt, &chosen);
  });
  print_timing(chosen, t, a.common.repeat, attention_flops(l, a.causal));
  x.save(a.out, &l);
  if (a.common.verbose) std::printf("wrote %s\n", a.out.c_str());
  return 0;
}

CLI::App* add_qkv_command(CLI::App* run, const char* name, const char* what, AttentionArgs* a) {
  CLI::App* c = run->add_subcommand(name, what);
  c->add_option("--q", a->q, "queries [B, Hq, Lq, D], float32 .npy")->required();
  c->add_option("--k", a->k, "keys [B, Hkv, Lk, D], float32 .npy")->required();
  c->add_option("--v", a->v, "values [B, Hkv, Lk, D], float32 .npy")->required();
  c->add_option("--out", a->out, "output [B, Hq, Lq, D] .npy to write")->required();
  c->add_flag("--causal", a->causal, "causal mask, aligned bottom-right");
  c->add_option("--scale", a->scale, "softmax scale (default 1/sqrt(D))")
      ->check(CLI::PositiveNumber);
  add_common_run_options(c, &a->common);
  return c;
}

}  // namespace

Action add_run_attention(CLI::App* run) {
  static AttentionArgs dense_args, topk_args, loki_args;
  CLI::App* dense = add_qkv_command(run, "dense", "exact softmax attention", &dense_args);
  dense->add_option("--lse", dense_args.lse, "also write the log-sum-exp [B, Hq, Lq] here");
  dense->add_option("--splits", dense_args.splits, "decode key splits (0 = automatic)")
      ->check(CLI::NonNegativeNumber);
  add_dtype_option(dense, &dense_args.dtype, /*kv_forms=*/true);
  CLI::App* topk = add_qkv_command(run, "topk", "top-k attention (Gupta et al. 2021)", &topk_args);
  // No range check here: k < 1 is the library's to refuse, with its own message.
  topk->add_option("--topk", topk_args.topk, "keys kept per query row (>= 1)")->required();
  add_dtype_option(topk, &topk_args.dtype);
  CLI::App* loki =
      add_qkv_command(run, "loki", "Loki: low-rank key scoring, top-k (decode)", &loki_args);
  loki->get_option("--k")->description(
      "keys rotated into the basis [B, Hkv, Lk, D] (hattn rotate)");
  loki->add_option("--basis", loki_args.basis,
                   "PCA basis [Hkv, D, D] or per layer [L, Hkv, D, D] (hattn calibrate loki)")
      ->required();
  loki->add_option("--layer", loki_args.layer, "layer of a per-layer basis to use, in [0, L)");
  // r and k: absolute or as fractions of D and Lk; the library refuses bad values itself.
  loki->add_option("--rank", loki_args.rank, "channels r of the approximate scores, in [1, D]");
  loki->add_option("--rank-fraction", loki_args.rank_fraction, "r as a fraction d_f of D");
  loki->add_option("--topk", loki_args.topk, "keys kept per query row (>= 1)");
  loki->add_option("--topk-fraction", loki_args.topk_fraction, "k as a fraction k_f of Lk");
  add_dtype_option(loki, &loki_args.dtype);
  loki->add_flag("--no-check-basis", loki_args.no_check_basis,
                 "skip the orthonormality check of the basis");
  CLI::Option* copy_lead =
      loki->add_flag("--copy-lead", loki_args.copy_lead,
                     "time with the leading r channels in a contiguous copy (LokiOptions::k_lead)");
  loki->add_option("--k-lead", loki_args.k_lead,
                   "leading channels of the rotated keys [B, Hkv, Lk, R], R >= r "
                   "(hattn rotate --lead-out): read by the approximate scores")
      ->excludes(copy_lead);
  return [dense, topk, loki]() {
    if (*dense) return run_dense(dense_args);
    if (*topk) return run_topk(topk_args);
    if (*loki) return run_loki(loki_args);
    return -1;
  };
}

}  // namespace hattn_cli
