// `hattn fidelity topk|loki`: how far an approximate variant is from dense attention, on synthetic
// inputs (`hattn fidelity activations`, on a model's own, is tools/cli_fidelity_activations.cpp).
// topk, as k varies, on two kinds of input drawn from a printed seed:
//   random  q, k, v standard normal: attention is diffuse, top-k loses mass for small k;
//   peaked  each query is `--sharpness` x the mean of `--aligned` random visible keys, plus
//           noise: those keys hold almost all the softmax mass (the regime where Gupta et al.
//           find top-k nearly exact).
// The error is ||o_topk - o_dense||_F / ||o_dense||_F over the whole output.
#include <cmath>
#include <cstdio>
#include <random>

#include "cli_common.h"

namespace hattn_cli {

namespace {

struct FidelityArgs {
  int64_t heads = 4, lq = 256, lk = 2048, head_dim = 64, aligned = 4;
  double sharpness = 12;
  uint64_t seed = 20261202;
  bool causal = false;
  int threads = 0;
};

struct Problem {
  std::vector<float> q, k, v;
};

Problem draw(const FidelityArgs& a, bool peaked) {
  std::mt19937_64 rng(a.seed + (peaked ? 1 : 0));
  std::normal_distribution<float> normal(0.f, 1.f);
  Problem p;
  const int64_t d = a.head_dim;
  p.q.resize(static_cast<size_t>(a.heads * a.lq * d));
  p.k.resize(static_cast<size_t>(a.heads * a.lk * d));
  p.v.resize(p.k.size());
  for (float& x : p.k) x = normal(rng);
  for (float& x : p.v) x = normal(rng);
  for (int64_t h = 0; h < a.heads; ++h) {
    for (int64_t i = 0; i < a.lq; ++i) {
      float* qi = &p.q[static_cast<size_t>((h * a.lq + i) * d)];
      for (int64_t c = 0; c < d; ++c) qi[c] = peaked ? 0.3f * normal(rng) : normal(rng);
      if (!peaked) continue;
      // Causal rows see keys [0, i + Lk - Lq]: align with visible keys only.
      const int64_t visible = a.causal ? std::min(a.lk, i + a.lk - a.lq + 1) : a.lk;
      std::uniform_int_distribution<int64_t> pick_visible(0, std::max<int64_t>(visible, 1) - 1);
      for (int64_t n = 0; n < a.aligned; ++n) {
        const float* kj = &p.k[static_cast<size_t>((h * a.lk + pick_visible(rng)) * d)];
        for (int64_t c = 0; c < d; ++c)
          qi[c] += static_cast<float>(a.sharpness / static_cast<double>(a.aligned)) * kj[c];
      }
    }
  }
  return p;
}

double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = static_cast<double>(got[i]) - want[i];
    num += e * e;
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

int run_fidelity(const FidelityArgs& a) {
  if (a.heads < 1 || a.lq < 1 || a.lk < 1 || a.head_dim < 1 || a.aligned < 1 ||
      !(a.sharpness > 0)) {
    die(2, "--heads, --lq, --lk, --head-dim and --aligned must be >= 1, --sharpness > 0");
  }
  if (a.threads > 0) hattn::set_num_threads(a.threads);
  std::printf("topk fidelity: H=%lld Lq=%lld Lk=%lld D=%lld%s, seed %llu\n",
              static_cast<long long>(a.heads), static_cast<long long>(a.lq),
              static_cast<long long>(a.lk), static_cast<long long>(a.head_dim),
              a.causal ? " causal" : "", static_cast<unsigned long long>(a.seed));
  std::printf(
      "error = ||o_topk - o_dense||_F / ||o_dense||_F; peaked: each query = %g x the mean "
      "of %lld random keys + noise\n",
      a.sharpness, static_cast<long long>(a.aligned));
  std::vector<int64_t> ks;
  for (int64_t k = 1; k < a.lk; k *= 2) ks.push_back(k);
  ks.push_back(a.lk);
  const Problem problems[2] = {draw(a, false), draw(a, true)};
  std::vector<float> dense[2], out(problems[0].q.size());
  const std::vector<int64_t> qs = {1, a.heads, a.lq, a.head_dim},
                             kvs = {1, a.heads, a.lk, a.head_dim};
  for (int p = 0; p < 2; ++p) {
    dense[p].resize(out.size());
    hattn::AttentionOptions opt;
    opt.causal = a.causal;
    check(hattn::attention(hattn::TensorView::contiguous(problems[p].q.data(), qs),
                           hattn::TensorView::contiguous(problems[p].k.data(), kvs),
                           hattn::TensorView::contiguous(problems[p].v.data(), kvs),
                           hattn::TensorView::contiguous(dense[p].data(), qs), opt));
  }
  std::printf("%8s %14s %14s\n", "k", "random", "peaked");
  for (int64_t k : ks) {
    double err[2];
    for (int p = 0; p < 2; ++p) {
      hattn::TopkOptions opt;
      opt.k = k;
      opt.causal = a.causal;
      check(hattn::topk_attention(hattn::TensorView::contiguous(problems[p].q.data(), qs),
                                  hattn::TensorView::contiguous(problems[p].k.data(), kvs),
                                  hattn::TensorView::contiguous(problems[p].v.data(), kvs),
                                  hattn::TensorView::contiguous(out.data(), qs), opt));
      err[p] = relative_error(out, dense[p]);
    }
    std::printf("%8lld %14.3e %14.3e\n", static_cast<long long>(k), err[0], err[1]);
  }
  return 0;
}

// Loki: keys k = (z * sigma) Q^T in a random orthonormal basis Q (a product of two Householder
// reflections), so Q is the keys' PCA basis and the rotated cache is z * sigma. sigma is 6.7x
// larger on the first D/4 axes than on the rest ("decaying": 94% of the variance in a quarter of
// the dimensions, like real keys) or 1 everywhere ("isotropic": no low-rank structure to exploit);
// both have E|k|^2 = D.
// Queries are peaked on a few keys, as for topk.
struct LokiProblem {
  std::vector<float> q, k, k_rot, v, basis;
};

LokiProblem draw_loki(const FidelityArgs& a, bool decaying) {
  std::mt19937_64 rng(a.seed + (decaying ? 11 : 12));
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t d = a.head_dim, n = a.heads * a.lk;
  LokiProblem p;
  p.basis.resize(static_cast<size_t>(a.heads * d * d));
  for (int64_t h = 0; h < a.heads; ++h) {
    std::vector<double> u(static_cast<size_t>(d)), w(static_cast<size_t>(d));
    double nu = 0, nw = 0;
    for (int64_t e = 0; e < d; ++e) {
      u[e] = normal(rng);
      w[e] = normal(rng);
      nu += u[e] * u[e];
      nw += w[e] * w[e];
    }
    // Q = (I - 2uu^T/|u|^2)(I - 2ww^T/|w|^2), column c: H_u (e_c - 2 w w_c / |w|^2).
    for (int64_t c = 0; c < d; ++c) {
      std::vector<double> col(static_cast<size_t>(d));
      double uc = 0;
      for (int64_t e = 0; e < d; ++e) {
        col[e] = (e == c ? 1.0 : 0.0) - 2.0 * w[e] * w[c] / nw;
        uc += u[e] * col[e];
      }
      for (int64_t e = 0; e < d; ++e) {
        p.basis[static_cast<size_t>((h * d + e) * d + c)] =
            static_cast<float>(col[e] - 2.0 * u[e] * uc / nu);
      }
    }
  }
  p.k_rot.resize(static_cast<size_t>(n * d));
  p.k.resize(p.k_rot.size());
  p.v.resize(p.k_rot.size());
  for (int64_t row = 0; row < n; ++row) {
    const int64_t h = row / a.lk;
    for (int64_t c = 0; c < d; ++c) {
      // Decaying: 1 : 0.15 between the two groups, scaled so that E|k|^2 = D as for isotropic
      // keys (equally peaked attention, so the two columns differ only in the spectrum).
      const float top = 1.f / std::sqrt(0.25f + 0.75f * 0.15f * 0.15f);
      const float sigma = !decaying ? 1.f : c < d / 4 ? top : 0.15f * top;
      p.k_rot[static_cast<size_t>(row * d + c)] = sigma * normal(rng);
    }
    for (int64_t e = 0; e < d; ++e) {  // k = k_rot Q^T
      double x = 0;
      for (int64_t c = 0; c < d; ++c) {
        x += double(p.k_rot[static_cast<size_t>(row * d + c)]) *
             p.basis[static_cast<size_t>((h * d + e) * d + c)];
      }
      p.k[static_cast<size_t>(row * d + e)] = static_cast<float>(x);
    }
  }
  for (float& x : p.v) x = normal(rng);
  p.q.resize(static_cast<size_t>(a.heads * a.lq * d));
  std::uniform_int_distribution<int64_t> pick(0, a.lk - 1);
  for (int64_t h = 0; h < a.heads; ++h) {
    for (int64_t i = 0; i < a.lq; ++i) {
      float* qi = &p.q[static_cast<size_t>((h * a.lq + i) * d)];
      for (int64_t c = 0; c < d; ++c) qi[c] = 0.3f * normal(rng);
      for (int64_t m = 0; m < a.aligned; ++m) {
        const float* kj = &p.k[static_cast<size_t>((h * a.lk + pick(rng)) * d)];
        for (int64_t c = 0; c < d; ++c) {
          qi[c] += static_cast<float>(a.sharpness / static_cast<double>(a.aligned)) * kj[c];
        }
      }
    }
  }
  return p;
}

int run_loki_fidelity(const FidelityArgs& a) {
  if (a.heads < 1 || a.lq < 1 || a.lk < 8 || a.head_dim < 8 || a.aligned < 1 ||
      !(a.sharpness > 0)) {
    die(2, "--heads, --lq, --aligned must be >= 1, --lk and --head-dim >= 8, --sharpness > 0");
  }
  if (a.threads > 0) hattn::set_num_threads(a.threads);
  std::printf(
      "loki fidelity: H=%lld Lq=%lld Lk=%lld D=%lld, seed %llu; queries peaked on %lld "
      "keys (sharpness %g)\n",
      static_cast<long long>(a.heads), static_cast<long long>(a.lq), static_cast<long long>(a.lk),
      static_cast<long long>(a.head_dim), static_cast<unsigned long long>(a.seed),
      static_cast<long long>(a.aligned), a.sharpness);
  std::printf(
      "error = ||o_loki - o_dense||_F / ||o_dense||_F; decaying keys: 94%% of the variance "
      "in D/4 axes; isotropic: none\n");
  std::printf("%6s %6s %14s %14s\n", "d_f", "k_f", "decaying", "isotropic");
  const std::vector<int64_t> qs = {1, a.heads, a.lq, a.head_dim},
                             ks = {1, a.heads, a.lk, a.head_dim};
  LokiProblem problems[2] = {draw_loki(a, true), draw_loki(a, false)};
  std::vector<float> dense[2], out(problems[0].q.size());
  for (int p = 0; p < 2; ++p) {
    dense[p].resize(out.size());
    check(hattn::attention(hattn::TensorView::contiguous(problems[p].q.data(), qs),
                           hattn::TensorView::contiguous(problems[p].k.data(), ks),
                           hattn::TensorView::contiguous(problems[p].v.data(), ks),
                           hattn::TensorView::contiguous(dense[p].data(), qs), {}));
  }
  for (double d_f : {0.125, 0.25, 0.5}) {
    for (double k_f : {0.125, 0.25, 0.5}) {
      double err[2];
      for (int p = 0; p < 2; ++p) {
        hattn::LokiOptions opt;
        opt.rank_fraction = d_f;
        opt.k_fraction = k_f;
        check(
            hattn::loki_attention(hattn::TensorView::contiguous(problems[p].q.data(), qs),
                                  hattn::TensorView::contiguous(problems[p].k_rot.data(), ks),
                                  hattn::TensorView::contiguous(problems[p].v.data(), ks),
                                  hattn::TensorView::contiguous(problems[p].basis.data(),
                                                                {a.heads, a.head_dim, a.head_dim}),
                                  hattn::TensorView::contiguous(out.data(), qs), opt));
        err[p] = relative_error(out, dense[p]);
      }
      std::printf("%6.3f %6.3f %14.3e %14.3e\n", d_f, k_f, err[0], err[1]);
    }
  }
  return 0;
}

}  // namespace

Action add_fidelity(CLI::App* app) {
  static FidelityArgs args;
  CLI::App* fidelity = app->add_subcommand("fidelity", "accuracy of an approximate variant");
  fidelity->require_subcommand(1);
  CLI::App* topk = fidelity->add_subcommand("topk", "top-k vs dense attention as k varies");
  topk->add_option("--heads", args.heads, "heads (default 4)");
  topk->add_option("--lq", args.lq, "query rows (default 256)");
  topk->add_option("--lk", args.lk, "keys (default 2048)");
  topk->add_option("--head-dim", args.head_dim, "D (default 64)");
  topk->add_option("--aligned", args.aligned, "keys each peaked query is built from (default 4)");
  topk->add_option("--sharpness", args.sharpness,
                   "peaked queries: multiple of the keys' mean (12)");
  topk->add_option("--seed", args.seed, "random seed (printed)");
  topk->add_flag("--causal", args.causal, "causal mask");
  topk->add_option("--threads", args.threads, "worker threads")->check(CLI::NonNegativeNumber);
  static FidelityArgs loki_args = [] {
    FidelityArgs l;
    l.lq = 4;
    l.lk = 4096;
    l.head_dim = 128;
    return l;
  }();
  CLI::App* loki = fidelity->add_subcommand("loki", "Loki vs dense attention over (d_f, k_f)");
  loki->add_option("--heads", loki_args.heads, "heads (default 4)");
  loki->add_option("--lq", loki_args.lq, "query rows (default 4: decode)");
  loki->add_option("--lk", loki_args.lk, "keys (default 4096)");
  loki->add_option("--head-dim", loki_args.head_dim, "D (default 128)");
  loki->add_option("--aligned", loki_args.aligned, "keys each query is built from (default 4)");
  loki->add_option("--sharpness", loki_args.sharpness, "multiple of the keys' mean (12)");
  loki->add_option("--seed", loki_args.seed, "random seed (printed)");
  loki->add_option("--threads", loki_args.threads, "worker threads")->check(CLI::NonNegativeNumber);
  const Action activations = add_fidelity_activations(fidelity);
  return [topk, loki, activations]() {
    if (*topk) return run_fidelity(args);
    if (*loki) return run_loki_fidelity(loki_args);
    return activations();
  };
}

}  // namespace hattn_cli
