// Batches as an inference engine holds them: paged KV caches (paged_attention, paged_append) and
// packed sequences of different lengths (ragged_attention). Validation first, all of it, so that
// a refused call writes nothing; then one dense_paged kernel over the whole batch for decode, or
// attention() per sequence where the work per sequence is large (prefill).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "dispatch.h"
#include "halide_glue.h"
#include "paged_internal.h"
#include "validate.h"

namespace hattn {
namespace {

using PagedKernel = Kernel<hattn_dense_paged_fn>;

const char* const kPageDims[4] = {"P", "Hkv", "S", "D"};
const char* const kAttentionDims[4] = {"B", "H", "L", "D"};
const char* const kPackedDims[3] = {"T", "H", "D"};

}  // namespace

std::string seq(int64_t b) { return "sequence " + std::to_string(b); }

int64_t pages_for(int64_t tokens, int64_t page) { return (tokens + page - 1) / page; }

namespace {

// The cache's views, table and lengths for a call of `batch` sequences of `dtype` with head dim
// `head_dim` that reads (extra = 0) or appends `extra` tokens after each sequence's length.
Status check_cache(const PagedKvCache& c, DType dtype, int64_t head_dim, int64_t batch,
                   int64_t extra, bool written) {
  const TensorView* pages[] = {&c.k_pages, &c.v_pages};
  const char* names[] = {"k_pages", "v_pages"};
  for (int n = 0; n < 2; ++n) {
    Status s = check_tensor(*pages[n], names[n], 4, kPageDims, written, true);
    if (!s.ok()) return s;
    if (pages[n]->device != Device::cpu) {
      return Status{StatusCode::unsupported, std::string("paged caches have CPU kernels only; ") +
                                                 names[n] + " is on " +
                                                 to_string(pages[n]->device)};
    }
    if (pages[n]->dtype != dtype) {
      return invalid(std::string(names[n]) + " has dtype " + to_string(pages[n]->dtype) +
                     " but the call's tensors have " + to_string(dtype) +
                     "; a call and its cache share one dtype");
    }
  }
  for (int i = 0; i < 4; ++i) {
    if (c.k_pages.shape[i] != c.v_pages.shape[i]) {
      return invalid("k_pages and v_pages must have the same shape [P, Hkv, S, D], got " +
                     shape_str(c.k_pages) + " and " + shape_str(c.v_pages));
    }
  }
  if (c.k_pages.shape[3] != head_dim) {
    return invalid("head dim D differs: the call's is " + std::to_string(head_dim) +
                   ", the pages' " + shape_str(c.k_pages) + " is " +
                   std::to_string(c.k_pages.shape[3]));
  }
  if (tensors_overlap(c.k_pages, c.v_pages)) {
    return invalid("k_pages and v_pages overlap in memory");
  }
  if (c.batch != batch) {
    return invalid("the cache describes batch = " + std::to_string(c.batch) +
                   " sequences but the call has B = " + std::to_string(batch));
  }
  if (c.page_table == nullptr || c.lengths == nullptr) {
    return invalid(std::string("the cache's ") +
                   (c.page_table == nullptr ? "page_table" : "lengths") + " pointer is null");
  }
  const int64_t num_pages = c.k_pages.shape[0], page = c.k_pages.shape[2];
  if (c.pages_per_seq < 1 || c.pages_per_seq * page > std::numeric_limits<int32_t>::max()) {
    return invalid("pages_per_seq must be in [1, (2^31-1) / S], got " +
                   std::to_string(c.pages_per_seq) + " (S = " + std::to_string(page) + ")");
  }
  const int64_t capacity = c.pages_per_seq * page;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = c.lengths[b];
    if (len < 0 || len + extra > capacity) {
      return invalid(
          seq(b) + ": lengths[" + std::to_string(b) + "] = " + std::to_string(len) +
          (extra ? " plus " + std::to_string(extra) + " new tokens" : "") +
          (len < 0 ? " is negative"
                   : " exceeds its pages: pages_per_seq x S = " + std::to_string(c.pages_per_seq) +
                         " x " + std::to_string(page) + " = " + std::to_string(capacity)));
    }
    for (int64_t p = 0; p < pages_for(len + extra, page); ++p) {
      const int64_t id = c.page_table[b * c.pages_per_seq + p];
      if (id < 0 || id >= num_pages) {
        return invalid(seq(b) + ": page_table[" + std::to_string(b) + "][" + std::to_string(p) +
                       "] = " + std::to_string(id) +
                       " is out of range [0, P = " + std::to_string(num_pages) + ")");
      }
    }
  }
  return Status::success();
}

}  // namespace

Status check_paged_call(const TensorView& q, const PagedKvCache& cache, const TensorView& out,
                        const AttentionOptions& options, AttentionShape* shape) {
  Status s = check_tensor(q, "q", 4, kAttentionDims, false, true);
  if (s.ok()) s = check_tensor(out, "out", 4, kAttentionDims, true, true);
  if (!s.ok()) return s;
  if (q.device != Device::cpu || out.device != Device::cpu) {
    return Status{StatusCode::unsupported, "paged attention has CPU kernels only; q is on " +
                                               std::string(to_string(q.device)) + ", out on " +
                                               to_string(out.device)};
  }
  if (out.dtype != q.dtype) {
    return invalid(std::string("q has dtype ") + to_string(q.dtype) + " but out has " +
                   to_string(out.dtype) + "; q, the cache and out of a call share one dtype");
  }
  if (std::vector<int64_t>(q.shape, q.shape + 4) !=
      std::vector<int64_t>(out.shape, out.shape + 4)) {
    return invalid("out must have q's shape " + shape_str(q) + ", got " + shape_str(out));
  }
  s = check_cache(cache, q.dtype, q.shape[3], q.shape[0], 0, false);
  if (!s.ok()) return s;
  const int64_t kv_heads = cache.k_pages.shape[1];
  if (q.shape[1] % kv_heads != 0) {
    return invalid(
        "query heads Hq = " + std::to_string(q.shape[1]) +
        " must be a multiple of the cache's key/value heads Hkv = " + std::to_string(kv_heads));
  }
  const TensorView* inputs[] = {&q, &cache.k_pages, &cache.v_pages, &out};
  const char* names[] = {"q", "k_pages", "v_pages"};
  for (int n = 0; n < 3; ++n) {
    if (tensors_overlap(out, *inputs[n])) {
      return invalid(std::string("out overlaps ") + names[n] +
                     " in memory; the output must not alias an input");
    }
  }
  if (options.lse != nullptr) {
    s = check_lse(*options.lse, {q.shape[0], q.shape[1], q.shape[2]}, Device::cpu, inputs, 4);
    if (!s.ok()) return s;
  }
  s = check_attention_options(options);
  if (!s.ok()) return s;
  const int64_t longest = *std::max_element(cache.lengths, cache.lengths + cache.batch);
  *shape = {q.shape[0], q.shape[1],  kv_heads, q.shape[2], longest,
            q.shape[3], Device::cpu, q.dtype,  q.dtype};
  return Status::success();
}

TensorView gather_pages(const PagedKvCache& c, const TensorView& pages, int64_t b,
                        std::vector<char>* scratch) {
  const int64_t kv_heads = pages.shape[1], page = pages.shape[2], channels = pages.shape[3];
  const int64_t len = c.lengths[b];
  const int64_t size = static_cast<int64_t>(element_size(pages.dtype));
  scratch->resize(static_cast<size_t>(std::max<int64_t>(kv_heads * len * channels, 1) * size));
  for (int64_t h = 0; h < kv_heads; ++h) {
    for (int64_t t = 0; t < len; ++t) {
      const int64_t id = c.page_table[b * c.pages_per_seq + t / page];
      const char* src =
          static_cast<const char*>(pages.data) +
          (id * pages.strides[0] + h * pages.strides[1] + (t % page) * pages.strides[2]) * size;
      std::memcpy(scratch->data() + (h * len + t) * channels * size, src,
                  static_cast<size_t>(channels * size));
    }
  }
  return TensorView::contiguous(scratch->data(), pages.dtype, {1, kv_heads, len, channels});
}

Status run_gathered(const TensorView& q, const PagedKvCache& c,
                    const std::vector<const TensorView*>& pages, const TensorView& out,
                    const std::string& why, Dispatch* chosen, const GatheredCall& call) {
  std::vector<std::vector<char>> scratch(pages.size());
  std::vector<TensorView> gathered(pages.size());
  Dispatch d;
  for (int64_t b = 0; b < c.batch; ++b) {
    if (c.lengths[b] == 0) {
      continue;
    }
    for (size_t n = 0; n < pages.size(); ++n) {
      gathered[n] = gather_pages(c, *pages[n], b, &scratch[n]);
    }
    Status s = call(sequence_of(q, b), gathered, sequence_of(out, b), &d);
    if (!s.ok()) {
      return Status{s.code, seq(b) + ": " + s.message};
    }
  }
  for (int64_t b = 0; b < c.batch; ++b) {
    if (c.lengths[b] == 0) {
      write_empty(sequence_of(out, b), nullptr);
    }
  }
  if (chosen != nullptr) {
    *chosen = d;
    chosen->reason = why + ": each sequence's pages gathered, then " + d.reason;
  }
  return Status::success();
}

Status run_per_sequence(const TensorView& q, const PagedKvCache& c, const TensorView& out,
                        const PerSequenceCall& call) {
  const int64_t page = c.k_pages.shape[2];
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t len = c.lengths[b];
    const TensorView q_b = sequence_of(q, b), out_b = sequence_of(out, b);
    if (len == 0) {
      write_empty(out_b, nullptr);
      continue;
    }
    HalideBuffer qb(q_b), ob(out_b);
    HalideBuffer table(const_cast<int32_t*>(c.page_table + b * c.pages_per_seq),
                       {1, pages_for(len, page)});
    HalideBuffer length(const_cast<int32_t*>(c.lengths + b), {1});
    Status s = call(qb, table, length, ob, len);
    if (!s.ok()) {
      return Status{s.code, seq(b) + ": " + s.message};
    }
  }
  return Status::success();
}

Status check_finite_paged(const TensorView& q, const PagedKvCache& c) {
  Status s = check_finite(q, "q");
  const int64_t page = c.k_pages.shape[2];
  const TensorView* pages[] = {&c.k_pages, &c.v_pages};
  const char* names[] = {"k_pages", "v_pages"};
  for (int64_t b = 0; b < c.batch && s.ok(); ++b) {
    for (int64_t t = 0; t < c.lengths[b] && s.ok(); ++t) {
      const int64_t id = c.page_table[b * c.pages_per_seq + t / page];
      for (int n = 0; n < 2 && s.ok(); ++n) {
        const TensorView& p = *pages[n];
        for (int64_t h = 0; h < p.shape[1] && s.ok(); ++h) {
          const int64_t row = id * p.strides[0] + h * p.strides[1] + (t % page) * p.strides[2];
          for (int64_t d = 0; d < p.shape[3]; ++d) {
            if (!std::isfinite(element_value(p, row + d))) {
              return Status{StatusCode::non_finite_input,
                            std::string(names[n]) + " holds a non-finite value at " + seq(b) +
                                ", token " + std::to_string(t) + ", head " + std::to_string(h) +
                                ", channel " + std::to_string(d)};
            }
          }
        }
      }
    }
  }
  return s;
}

void write_empty(const TensorView& out, const TensorView* lse) {
  const size_t size = element_size(out.dtype);
  for (int64_t h = 0; h < out.shape[1]; ++h) {
    for (int64_t i = 0; i < out.shape[2]; ++i) {
      char* row = static_cast<char*>(out.data) +
                  (h * out.strides[1] + i * out.strides[2]) * static_cast<int64_t>(size);
      std::memset(row, 0, static_cast<size_t>(out.shape[3]) * size);
      if (lse != nullptr) {
        static_cast<float*>(lse->data)[h * lse->strides[1] + i * lse->strides[2]] =
            -std::numeric_limits<float>::infinity();
      }
    }
  }
}

TensorView subview(const TensorView& t, int64_t offset, std::vector<int64_t> shape,
                   std::vector<int64_t> strides) {
  char* base = static_cast<char*>(t.data) + offset * static_cast<int64_t>(element_size(t.dtype));
  return TensorView::strided(base, t.dtype, std::move(shape), std::move(strides));
}

TensorView sequence_of(const TensorView& t, int64_t b) {
  std::vector<int64_t> shape(t.shape + 1, t.shape + t.rank);
  shape.insert(shape.begin(), 1);
  std::vector<int64_t> strides(t.strides, t.strides + t.rank);
  return subview(t, b * t.strides[0], shape, strides);
}

namespace {

// plan_attention() of q_b over a one-token cache [1, kv_heads, 1, dim] at k_data, v_data.
Status attention_plan_only(const TensorView& q_b, void* k_data, void* v_data, int64_t kv_heads,
                           int64_t dim, const TensorView& out_b, const AttentionOptions& options,
                           Dispatch* d) {
  const TensorView k = TensorView::contiguous(k_data, q_b.dtype, {1, kv_heads, 1, dim});
  const TensorView v = TensorView::contiguous(v_data, q_b.dtype, {1, kv_heads, 1, dim});
  return plan_attention(q_b, k, v, out_b, options, d);
}

// Chunked prefill over pages: each sequence's tokens gathered into [1, Hkv, len, D] scratch, then
// attention() (its prefill kernel). The gather costs O(len D) per kv head next to the O(Lq len D)
// of the attention it feeds.
Status paged_prefill(const TensorView& q, const PagedKvCache& c, const TensorView& out,
                     const AttentionOptions& options, Dispatch* chosen) {
  const int64_t kv_heads = c.k_pages.shape[1], dim = c.k_pages.shape[3];
  const size_t size = element_size(q.dtype);
  std::vector<char> k_seq(static_cast<size_t>(kv_heads * dim) * size),
      v_seq(static_cast<size_t>(kv_heads * dim) * size);
  {
    // Every sequence takes the same prefill kernel (the kernel does not depend on its length):
    // plan it once, over a one-token cache, before anything is written.
    AttentionOptions o = options;
    o.lse = nullptr;
    Dispatch d;
    Status s = attention_plan_only(sequence_of(q, 0), k_seq.data(), v_seq.data(), kv_heads, dim,
                                   sequence_of(out, 0), o, &d);
    if (!s.ok()) return s;
  }
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t len = c.lengths[b];
    const TensorView q_b = sequence_of(q, b), out_b = sequence_of(out, b);
    TensorView lse_b;
    if (options.lse != nullptr) lse_b = sequence_of(*options.lse, b);
    if (len == 0) {
      write_empty(out_b, options.lse ? &lse_b : nullptr);
      continue;
    }
    const TensorView k_b = gather_pages(c, c.k_pages, b, &k_seq);
    const TensorView v_b = gather_pages(c, c.v_pages, b, &v_seq);
    AttentionOptions o = options;
    o.lse = options.lse ? &lse_b : nullptr;
    o.check_finite = false;  // checked for the whole batch
    Status s = attention(q_b, k_b, v_b, out_b, o, chosen);
    if (!s.ok()) return Status{s.code, seq(b) + ": " + s.message};
  }
  if (chosen != nullptr) {
    chosen->reason = "Lq=" + std::to_string(q.shape[2]) + " > " + std::to_string(kDecodeMaxLq) +
                     ": each sequence's pages gathered, then " + chosen->reason;
  }
  return Status::success();
}

}  // namespace

Status paged_attention(const TensorView& q, const PagedKvCache& cache, const TensorView& out,
                       const AttentionOptions& options, Dispatch* chosen) {
  AttentionShape shape;
  Status s = check_paged_call(q, cache, out, options, &shape);
  if (!s.ok()) return s;
  if (options.check_finite) {
    s = check_finite_paged(q, cache);
    if (!s.ok()) return s;
  }
  if (shape.lq > kDecodeMaxLq) return paged_prefill(q, cache, out, options, chosen);

  KernelRequest request = attention_request(shape, options.causal, options.kernel);
  request.lse = true;  // the paged kernels always return it
  PagedKernel kernel;
  std::string reason;
  s = choose_kernel(request, &kernel, &reason);
  if (!s.ok()) return s;
  const int32_t splits = choose_decode_splits(shape, options.decode_splits);
  if (chosen != nullptr) *chosen = {kernel.name(), reason, splits};

  const TensorView lse_view = lse_or_scratch(options, shape);
  // The kernel only reads the table and the lengths.
  HalideBuffer qb(q), kb(cache.k_pages), vb(cache.v_pages), ob(out), lb(lse_view);
  HalideBuffer table(const_cast<int32_t*>(cache.page_table), {cache.batch, cache.pages_per_seq});
  HalideBuffer lengths(const_cast<int32_t*>(cache.lengths), {cache.batch});
  int64_t tokens = 0;
  for (int64_t b = 0; b < cache.batch; ++b) {
    tokens += cache.lengths[b];
  }
  CallContext ctx;
  ctx.serial = decode_runs_serially(shape, tokens);
  return kernel.call(ctx, qb, kb, vb, table, lengths, resolve_scale(options, shape.head_dim),
                     splits, ob, lb);
}

Status paged_append(const TensorView& k, const TensorView& v, const PagedKvCache& cache) {
  Status s = check_tensor(k, "k", 4, kAttentionDims, false, true);
  if (s.ok()) s = check_tensor(v, "v", 4, kAttentionDims, false, true);
  if (!s.ok()) return s;
  if (std::vector<int64_t>(k.shape, k.shape + 4) != std::vector<int64_t>(v.shape, v.shape + 4) ||
      k.dtype != v.dtype) {
    return invalid("k and v must have the same shape and dtype, got " + k.describe() + " and " +
                   v.describe());
  }
  if (k.device != Device::cpu || v.device != Device::cpu) {
    return Status{StatusCode::unsupported, "paged caches have CPU kernels only"};
  }
  const int64_t tokens = k.shape[2];
  s = check_cache(cache, k.dtype, k.shape[3], k.shape[0], tokens, true);
  if (!s.ok()) return s;
  if (k.shape[1] != cache.k_pages.shape[1]) {
    return invalid("k has Hkv = " + std::to_string(k.shape[1]) + " heads but the cache has " +
                   std::to_string(cache.k_pages.shape[1]));
  }
  const TensorView* cache_views[] = {&cache.k_pages, &cache.v_pages};
  for (const TensorView* t : cache_views) {
    if (tensors_overlap(k, *t) || tensors_overlap(v, *t)) {
      return invalid("the new tokens' k or v overlap the cache's pages in memory");
    }
  }
  // Two sequences writing one page would overwrite each other's tokens.
  const int64_t page = cache.k_pages.shape[2];
  std::map<int64_t, int64_t> writer;  // page -> the sequence writing it
  for (int64_t b = 0; b < cache.batch; ++b) {
    const int64_t first = cache.lengths[b] / page;
    const int64_t last = (cache.lengths[b] + tokens - 1) / page;
    for (int64_t p = first; p <= last && tokens > 0; ++p) {
      const int64_t id = cache.page_table[b * cache.pages_per_seq + p];
      auto [it, fresh] = writer.emplace(id, b);
      if (!fresh) {
        return invalid(seq(b) + " would write page " + std::to_string(id) + " (page_table[" +
                       std::to_string(b) + "][" + std::to_string(p) + "]), which " +
                       seq(it->second) + " writes too");
      }
    }
  }
  const size_t size = element_size(k.dtype);
  const size_t row = static_cast<size_t>(k.shape[3]) * size;
  const TensorView* src[] = {&k, &v};
  for (int64_t b = 0; b < cache.batch; ++b) {
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t pos = cache.lengths[b] + t;
      const int64_t id = cache.page_table[b * cache.pages_per_seq + pos / page];
      for (int n = 0; n < 2; ++n) {
        const TensorView& dst = *cache_views[n];
        for (int64_t h = 0; h < k.shape[1]; ++h) {
          const char* from =
              static_cast<const char*>(src[n]->data) +
              (b * src[n]->strides[0] + h * src[n]->strides[1] + t * src[n]->strides[2]) *
                  static_cast<int64_t>(size);
          char* to = static_cast<char*>(dst.data) +
                     (id * dst.strides[0] + h * dst.strides[1] + (pos % page) * dst.strides[2]) *
                         static_cast<int64_t>(size);
          std::memcpy(to, from, row);
        }
      }
    }
  }
  return Status::success();
}

Status ragged_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const int32_t* q_offsets, const int32_t* k_offsets,
                        int64_t batch, const AttentionOptions& options, Dispatch* chosen) {
  const TensorView* views[] = {&q, &k, &v, &out};
  const char* names[] = {"q", "k", "v", "out"};
  for (int n = 0; n < 4; ++n) {
    Status s = check_tensor(*views[n], names[n], 3, kPackedDims, n == 3, true);
    if (!s.ok()) return s;
    if (views[n]->dtype != q.dtype) {
      return invalid(std::string(names[n]) + " has dtype " + to_string(views[n]->dtype) +
                     " but q has " + to_string(q.dtype) + "; a call's tensors share one dtype");
    }
    if (views[n]->device != Device::cpu) {
      return Status{StatusCode::unsupported, std::string("ragged attention runs on the CPU; ") +
                                                 names[n] + " is on " +
                                                 to_string(views[n]->device)};
    }
  }
  if (std::vector<int64_t>(k.shape, k.shape + 3) != std::vector<int64_t>(v.shape, v.shape + 3)) {
    return invalid("k and v must have the same shape [Tk, Hkv, D], got " + shape_str(k) + " and " +
                   shape_str(v));
  }
  if (std::vector<int64_t>(q.shape, q.shape + 3) !=
      std::vector<int64_t>(out.shape, out.shape + 3)) {
    return invalid("out must have q's shape " + shape_str(q) + ", got " + shape_str(out));
  }
  if (q.shape[2] != k.shape[2]) {
    return invalid("head dim D differs: q " + shape_str(q) + ", k " + shape_str(k));
  }
  if (q.shape[1] % k.shape[1] != 0) {
    return invalid("query heads Hq = " + std::to_string(q.shape[1]) +
                   " must be a multiple of key/value heads Hkv = " + std::to_string(k.shape[1]));
  }
  for (int n = 0; n < 3; ++n) {
    if (tensors_overlap(out, *views[n])) {
      return invalid(std::string("out overlaps ") + names[n] + " in memory");
    }
  }
  if (batch < 1 || q_offsets == nullptr || k_offsets == nullptr) {
    return invalid("a ragged batch needs batch >= 1 and batch + 1 offsets for q and for k");
  }
  const int32_t* offsets[] = {q_offsets, k_offsets};
  const char* offset_names[] = {"q_offsets", "k_offsets"};
  const int64_t totals[] = {q.shape[0], k.shape[0]};
  for (int n = 0; n < 2; ++n) {
    const std::string o = offset_names[n];
    if (offsets[n][0] != 0) {
      return invalid(o + "[0] = " + std::to_string(offsets[n][0]) + ", must be 0");
    }
    for (int64_t b = 0; b < batch; ++b) {
      if (offsets[n][b + 1] < offsets[n][b]) {
        return invalid(seq(b) + ": " + o + "[" + std::to_string(b + 1) +
                       "] = " + std::to_string(offsets[n][b + 1]) + " is below " + o + "[" +
                       std::to_string(b) + "] = " + std::to_string(offsets[n][b]) +
                       " (offsets must not decrease)");
      }
    }
    if (offsets[n][batch] != totals[n]) {
      return invalid(o + "[" + std::to_string(batch) + "] = " + std::to_string(offsets[n][batch]) +
                     " must equal the packed tokens " + std::to_string(totals[n]) + " of " +
                     (n ? "k" : "q"));
    }
  }
  if (options.lse != nullptr) {
    Status s = check_lse(*options.lse, {1, q.shape[1], q.shape[0]}, Device::cpu, views, 4);
    if (!s.ok()) return s;
  }
  Status so = check_attention_options(options);
  if (!so.ok()) return so;
  if (options.check_finite) {
    Status s = finite_or_refuse(views, names, 3);
    if (!s.ok()) return s;
  }

  // [1, H, rows, D] over rows r0 .. r0 + rows - 1 of a packed [T, H, D] view.
  auto rows_of = [](const TensorView& t, int64_t r0, int64_t rows) {
    return subview(t, r0 * t.strides[0], {1, t.shape[1], rows, t.shape[2]},
                   {rows * t.strides[0], t.strides[1], t.strides[0], 1});
  };
  // Every sequence takes the same kind of kernel but for its Lq (decode or prefill): plan one of
  // each kind present before anything is written, so that a refusal writes nothing.
  bool planned[2] = {false, false};
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t q0 = q_offsets[b], lq = q_offsets[b + 1] - q0;
    const int64_t k0 = k_offsets[b], lk = k_offsets[b + 1] - k0;
    const bool decode = lq <= kDecodeMaxLq;
    if (lq == 0 || lk == 0 || planned[decode]) continue;
    AttentionOptions o = options;
    o.lse = nullptr;
    Dispatch d;
    Status s = plan_attention(rows_of(q, q0, lq), rows_of(k, k0, lk), rows_of(v, k0, lk),
                              rows_of(out, q0, lq), o, &d);
    if (!s.ok()) return Status{s.code, seq(b) + ": " + s.message};
    planned[decode] = true;
  }

  for (int64_t b = 0; b < batch; ++b) {
    const int64_t q0 = q_offsets[b], lq = q_offsets[b + 1] - q0;
    const int64_t k0 = k_offsets[b], lk = k_offsets[b + 1] - k0;
    if (lq == 0) continue;
    const TensorView out_b = rows_of(out, q0, lq);
    TensorView lse_b;
    if (options.lse != nullptr) {
      const TensorView& l = *options.lse;
      lse_b = TensorView::strided(static_cast<float*>(l.data) + q0 * l.strides[2],
                                  {1, l.shape[1], lq}, {l.strides[0], l.strides[1], l.strides[2]});
    }
    if (lk == 0) {
      write_empty(out_b, options.lse ? &lse_b : nullptr);
      continue;
    }
    AttentionOptions o = options;
    o.lse = options.lse ? &lse_b : nullptr;
    o.check_finite = false;
    Status s =
        attention(rows_of(q, q0, lq), rows_of(k, k0, lk), rows_of(v, k0, lk), out_b, o, chosen);
    if (!s.ok()) return Status{s.code, seq(b) + ": " + s.message};
  }
  return Status::success();
}

}  // namespace hattn
