// `hattn run paged` and `hattn run ragged`: the batch forms of dense attention (hattn.h's
// paged_attention over a paged KV cache, ragged_attention over packed sequences) on .npy files.
// The tensors are float32 .npy (rounded in memory for --dtype bf16|f16, as `run dense` does); the
// page table, lengths and offsets are int32 .npy (int64 is accepted and range-checked).
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cli_common.h"

namespace hattn_cli {

namespace {

struct BatchArgs {
  std::string q, k, v, out, lse;     // paged: k and v are --k-pages and --v-pages
  std::string page_table, lengths;   // paged
  std::string q_offsets, k_offsets;  // ragged
  bool causal = false;
  double scale = 0;
  int splits = 0;
  std::string dtype = "f32";
  CommonRunArgs common;
};

hattn::AttentionOptions options_of(const BatchArgs& a) {
  hattn::AttentionOptions opt;
  opt.causal = a.causal;
  opt.decode_splits = a.splits;
  set_common(a.common, &opt);
  set_scale(a.scale, &opt);
  return opt;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void report_written(const BatchArgs& a) {
  if (a.common.verbose) {
    std::printf("wrote %s%s%s\n", a.out.c_str(), a.lse.empty() ? "" : " and ", a.lse.c_str());
  }
}

int run_paged(const BatchArgs& a) {
  if (a.common.threads > 0) hattn::set_num_threads(a.common.threads);
  const hattn::npy::Array q = load(a.q, "q", 4, "[B, Hq, Lq, D]"),
                          k_pages = load(a.k, "k_pages", 4, "[P, Hkv, S, D]"),
                          v_pages = load(a.v, "v_pages", 4, "[P, Hkv, S, D]");
  const Indices table = load_indices(a.page_table, "page_table", 2, "[B, pages_per_seq]");
  const Indices lengths = load_indices(a.lengths, "lengths", 1, "[B]");
  // The library reads `batch` rows of the table and entries of lengths: both must hold that many
  // (q's B against them is the library's check, with its own message).
  if (table.shape[0] != lengths.shape[0]) {
    die(1, a.page_table + ": page_table has " + std::to_string(table.shape[0]) + " rows but " +
               a.lengths + " holds " + std::to_string(lengths.shape[0]) +
               " lengths; both have one per sequence");
  }
  const hattn::DType dtype = parse_dtype(a.dtype);
  std::vector<uint16_t> q16, k16, v16, out16;
  std::vector<float> out;
  const hattn::TensorView qv = as_dtype(q, dtype, &q16),
                          ov = output_as(dtype, q.shape, &out, &out16);
  hattn::PagedKvCache cache;
  cache.k_pages = as_dtype(k_pages, dtype, &k16);
  cache.v_pages = as_dtype(v_pages, dtype, &v16);
  cache.page_table = table.data.data();
  cache.pages_per_seq = table.shape[1];
  cache.lengths = lengths.data.data();
  cache.batch = lengths.shape[0];
  hattn::AttentionOptions opt = options_of(a);
  const std::vector<int64_t> lse_shape = {q.shape[0], q.shape[1], q.shape[2]};
  std::vector<float> lse;
  hattn::TensorView lse_view;
  if (!a.lse.empty()) {
    lse.resize(static_cast<size_t>(numel(lse_shape)));
    lse_view = hattn::TensorView::contiguous(lse.data(), lse_shape);
    opt.lse = &lse_view;
  }
  hattn::Dispatch chosen;
  const double t = median_seconds(
      a.common.repeat, [&] { return hattn::paged_attention(qv, cache, ov, opt, &chosen); });
  // Accepted, so every length is in range: the work is each sequence's visible pairs, the bytes
  // those of q, out and the K and V its tokens hold.
  const int64_t hq = q.shape[1], lq = q.shape[2], d = q.shape[3], hkv = k_pages.shape[1];
  double pairs = 0, tokens = 0;
  for (int32_t len : lengths.data) {
    pairs += visible_pairs(lq, len, a.causal);
    tokens += len;
  }
  const double bytes =
      static_cast<double>(dtype_bytes(dtype)) *
      (2.0 * static_cast<double>(numel(q.shape)) + 2.0 * static_cast<double>(hkv * d) * tokens);
  print_timing(chosen, t, a.common.repeat, 4.0 * static_cast<double>(hq * d) * pairs, bytes);
  save_output(a.out, dtype, q.shape, out16, &out);
  if (!a.lse.empty()) save(a.lse, lse_shape, lse.data());
  report_written(a);
  return 0;
}

int run_ragged(const BatchArgs& a) {
  if (a.common.threads > 0) hattn::set_num_threads(a.common.threads);
  const hattn::npy::Array q = load(a.q, "q", 3, "[Tq, Hq, D]"),
                          k = load(a.k, "k", 3, "[Tk, Hkv, D]"),
                          v = load(a.v, "v", 3, "[Tk, Hkv, D]");
  const Indices q_offsets = load_indices(a.q_offsets, "q_offsets", 1, "[B + 1]");
  const Indices k_offsets = load_indices(a.k_offsets, "k_offsets", 1, "[B + 1]");
  // The library reads batch + 1 entries of each: they must agree and hold one sequence at least.
  if (q_offsets.shape[0] != k_offsets.shape[0]) {
    die(1, a.q_offsets + ": q_offsets holds " + std::to_string(q_offsets.shape[0]) +
               " entries but " + a.k_offsets + " holds " + std::to_string(k_offsets.shape[0]) +
               "; both are [B + 1]");
  }
  if (q_offsets.shape[0] < 2) {
    die(1, a.q_offsets + ": q_offsets must hold B + 1 >= 2 entries, got " +
               std::to_string(q_offsets.shape[0]));
  }
  const int64_t batch = q_offsets.shape[0] - 1;
  const hattn::DType dtype = parse_dtype(a.dtype);
  std::vector<uint16_t> q16, k16, v16, out16;
  std::vector<float> out;
  const hattn::TensorView qv = as_dtype(q, dtype, &q16), kv = as_dtype(k, dtype, &k16),
                          vv = as_dtype(v, dtype, &v16),
                          ov = output_as(dtype, q.shape, &out, &out16);
  hattn::AttentionOptions opt = options_of(a);
  const std::vector<int64_t> lse_shape = {1, q.shape[1], q.shape[0]};
  std::vector<float> lse;
  hattn::TensorView lse_view;
  if (!a.lse.empty()) {
    lse.resize(static_cast<size_t>(numel(lse_shape)));
    lse_view = hattn::TensorView::contiguous(lse.data(), lse_shape);
    opt.lse = &lse_view;
  }
  hattn::Dispatch chosen;
  const double t = median_seconds(a.common.repeat, [&] {
    return hattn::ragged_attention(qv, kv, vv, ov, q_offsets.data.data(), k_offsets.data.data(),
                                   batch, opt, &chosen);
  });
  // Accepted, so the offsets are in order: each sequence's visible pairs; q, k, v and out read or
  // written once.
  double pairs = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const size_t i = static_cast<size_t>(b);
    pairs += visible_pairs(q_offsets.data[i + 1] - q_offsets.data[i],
                           k_offsets.data[i + 1] - k_offsets.data[i], a.causal);
  }
  const double bytes = static_cast<double>(dtype_bytes(dtype)) *
                       static_cast<double>(2 * numel(q.shape) + 2 * numel(k.shape));
  print_timing(chosen, t, a.common.repeat,
               4.0 * static_cast<double>(q.shape[1] * q.shape[2]) * pairs, bytes);
  save_output(a.out, dtype, q.shape, out16, &out);
  if (!a.lse.empty()) save(a.lse, lse_shape, lse.data());
  report_written(a);
  return 0;
}

// The options both commands share, after their own inputs.
void add_attention_options(CLI::App* c, BatchArgs* a, const char* out_shape,
                           const char* lse_shape) {
  c->add_option("--out", a->out, std::string("output ") + out_shape + " .npy to write")->required();
  c->add_option("--lse", a->lse, std::string("also write the log-sum-exp ") + lse_shape + " here");
  c->add_flag("--causal", a->causal, "causal mask, aligned bottom-right per sequence");
  c->add_option("--scale", a->scale, "softmax scale (default 1/sqrt(D))")
      ->check(CLI::PositiveNumber);
  add_dtype_option(c, &a->dtype);
  add_common_run_options(c, &a->common);
}

}  // namespace

Action add_run_batch(CLI::App* run) {
  static BatchArgs paged_args, ragged_args;
  CLI::App* paged =
      run->add_subcommand("paged", "dense attention over a paged KV cache (paged_attention)");
  paged->add_option("--q", paged_args.q, "queries [B, Hq, Lq, D], float32 .npy")->required();
  paged->add_option("--k-pages", paged_args.k, "key pages [P, Hkv, S, D], float32 .npy")
      ->required();
  paged->add_option("--v-pages", paged_args.v, "value pages [P, Hkv, S, D], float32 .npy")
      ->required();
  paged
      ->add_option("--page-table", paged_args.page_table,
                   "page indices [B, pages_per_seq], int32 .npy: token t of sequence b is in page "
                   "table[b][t / S], slot t % S")
      ->required();
  paged->add_option("--lengths", paged_args.lengths, "cached tokens per sequence [B], int32 .npy")
      ->required();
  add_attention_options(paged, &paged_args, "[B, Hq, Lq, D]", "[B, Hq, Lq]");
  paged->add_option("--splits", paged_args.splits, "decode key splits (0 = automatic)")
      ->check(CLI::NonNegativeNumber);

  CLI::App* ragged = run->add_subcommand(
      "ragged", "dense attention over sequences packed along the tokens (ragged_attention)");
  ragged->add_option("--q", ragged_args.q, "packed queries [Tq, Hq, D], float32 .npy")->required();
  ragged->add_option("--k", ragged_args.k, "packed keys [Tk, Hkv, D], float32 .npy")->required();
  ragged->add_option("--v", ragged_args.v, "packed values [Tk, Hkv, D], float32 .npy")->required();
  ragged
      ->add_option("--q-offsets", ragged_args.q_offsets,
                   "[B + 1] int32 .npy: sequence b's queries are rows q_offsets[b] .. "
                   "q_offsets[b + 1] - 1")
      ->required();
  ragged
      ->add_option("--k-offsets", ragged_args.k_offsets,
                   "[B + 1] int32 .npy: sequence b's keys and values are rows k_offsets[b] .. "
                   "k_offsets[b + 1] - 1")
      ->required();
  add_attention_options(ragged, &ragged_args, "[Tq, Hq, D]", "[1, Hq, Tq]");
  return [paged, ragged]() {
    if (*paged) return run_paged(paged_args);
    if (*ragged) return run_ragged(ragged_args);
    return -1;
  };
}

}  // namespace hattn_cli
