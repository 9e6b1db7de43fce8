// hattn::sparsek_*: SPARSEK (Lou et al. 2024). Validation, the scoring network, the per-prefix
// mask sweep (sparsek_sweep.h), and the calls into the generated kernels: sparsek_mask (the
// operator on rows) and sparsek (attention over window + selection, for prefill and for decode
// steps over the bounded cache).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "dispatch.h"
#include "halide_glue.h"
#include "sparsek_sweep.h"
#include "validate.h"

namespace hattn {

namespace {

// A dense row-major Halide buffer over caller-owned memory of any element type (the selection
// inputs are int32).
struct RawBuffer {
  halide_buffer_t buf{};
  halide_dimension_t dims[4]{};
  RawBuffer(void* data, halide_type_t type, const std::vector<int64_t>& shape) {
    buf.host = static_cast<uint8_t*>(data);
    buf.type = type;
    buf.dimensions = static_cast<int32_t>(shape.size());
    buf.dim = dims;
    int64_t stride = 1;
    for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
      halide_dimension_t& d = dims[shape.size() - 1 - static_cast<size_t>(i)];
      d.min = 0;
      d.extent = static_cast<int32_t>(shape[static_cast<size_t>(i)]);
      d.stride = static_cast<int32_t>(stride);
      d.flags = 0;
      stride *= shape[static_cast<size_t>(i)];
    }
  }
  halide_buffer_t* get() { return &buf; }
};
constexpr halide_type_t kI32{halide_type_int, 32, 1};

Status check_options(const SparsekOptions& o) {
  if (o.k < 0) return invalid("sparsek budget k must be >= 0, got " + std::to_string(o.k));
  if (o.window < 0) {
    return invalid("sparsek window w must be >= 0, got " + std::to_string(o.window));
  }
  if (!std::isfinite(o.slope)) return invalid("sparsek slope must be finite");
  if (o.k > std::numeric_limits<int32_t>::max() / 2 ||
      o.window > std::numeric_limits<int32_t>::max() / 2) {
    return invalid("sparsek k and w must be below 2^30");
  }
  return Status::success();
}

Status check_host(const TensorView& t, const char* name) {
  if (t.device != Device::cpu) {
    return Status{StatusCode::unsupported, std::string("sparsek has CPU kernels only; ") + name +
                                               " is on " + to_string(t.device)};
  }
  return Status::success();
}

// x [B, L, Dm] and w_score [Hkv, Dm] against the call's B, Lk and Hkv.
Status check_scoring(const TensorView& x, const TensorView& w_score, int64_t batch, int64_t lk,
                     int64_t kv_heads) {
  static const char* const kX[3] = {"B", "L", "Dm"};
  static const char* const kW[2] = {"Hkv", "Dm"};
  Status s = check_tensor(x, "x", 3, kX, false);
  if (s.ok()) s = check_tensor(w_score, "w_score", 2, kW, false);
  if (s.ok()) s = check_host(x, "x");
  if (s.ok()) s = check_host(w_score, "w_score");
  if (!s.ok()) return s;
  if (x.shape[0] != batch || x.shape[1] != lk) {
    return invalid("x must be [B, Lk, Dm] with B=" + std::to_string(batch) + " and Lk=" +
                   std::to_string(lk) + " (the keys' batch and length), got " + shape_str(x));
  }
  if (w_score.shape[0] != kv_heads || w_score.shape[1] != x.shape[2]) {
    return invalid("w_score must be [Hkv, Dm] = [" + std::to_string(kv_heads) + ", " +
                   std::to_string(x.shape[2]) + "], got " + shape_str(w_score));
  }
  return Status::success();
}

const float* fptr(const TensorView& t) { return static_cast<const float*>(t.data); }

// u for positions [j0, j0 + n) of batch b, kv head h: w . x_j + slope * j (float accumulation in
// an order the compiler can vectorize).
void score_rows(const TensorView& x, const TensorView& w, float slope, int64_t b, int64_t h,
                int64_t j0, int64_t n, float* u) {
  const int64_t dm = x.shape[2];
  const float* wr = fptr(w) + h * w.strides[0];
  for (int64_t j = 0; j < n; ++j) {
    const float* xr = fptr(x) + b * x.strides[0] + (j0 + j) * x.strides[1];
    float acc = 0.f;
    for (int64_t m = 0; m < dm; ++m) acc += wr[m] * xr[m];
    u[j] = acc + slope * static_cast<float>(j0 + j);
  }
}

template <typename F>
void parallel_for(int64_t n, F&& body) {
  const int64_t threads = std::min<int64_t>(n, worker_threads());
  if (threads <= 1) {
    for (int64_t t = 0; t < n; ++t) body(t);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t w = 0; w < threads; ++w) {
    pool.emplace_back([&, w] {
      for (int64_t t = w; t < n; t += threads) body(t);
    });
  }
  for (auto& th : pool) th.join();
}

// Selections of every query row: sel_index / sel_gate [B, Hkv, Lq, slots], sel_count
// [B, Hkv, Lq]. `u_of(b, h)` gives the Lk scores of a kv head.
struct Selections {
  int64_t slots = 1;
  std::vector<int32_t> index, count;
  std::vector<float> gate;
};

template <typename ScoreFn>
void sweep_all(const AttentionShape& sh, const SparsekOptions& o, ScoreFn&& u_of, Selections* sel) {
  sel->slots = std::max<int64_t>(1, std::min(o.k, sh.lk));
  const int64_t heads = sh.batch * sh.kv_heads;
  sel->index.assign(static_cast<size_t>(heads * sh.lq * sel->slots), 0);
  sel->gate.assign(sel->index.size(), 0.f);
  sel->count.assign(static_cast<size_t>(heads * sh.lq), 0);
  parallel_for(heads, [&](int64_t t) {
    const int64_t b = t / sh.kv_heads, h = t % sh.kv_heads;
    std::vector<float> u(static_cast<size_t>(sh.lk));
    u_of(b, h, u.data());
    // A budget beyond Lk keeps every candidate, as Lk itself does (p is all ones either way).
    SparsekSweep sweep(std::min(o.k, sh.lk));
    int64_t pushed = 0;
    for (int64_t i = 0; i < sh.lq; ++i) {
      const int64_t candidates = std::min(sh.lk, i + (sh.lk - sh.lq) - o.window + 1);
      for (; pushed < candidates; ++pushed) sweep.push(u[static_cast<size_t>(pushed)], pushed);
      const size_t row = static_cast<size_t>(t * sh.lq + i);
      sel->count[row] = o.k > 0
                            ? sweep.select(&sel->index[row * static_cast<size_t>(sel->slots)],
                                           &sel->gate[row * static_cast<size_t>(sel->slots)], false)
                            : 0;
    }
  });
}

Status run_attention_kernel(const KernelEntry* kernel, const TensorView& q, const TensorView& k,
                            const TensorView& v, const TensorView& out, Selections& sel, int64_t lq,
                            int64_t batch, int64_t kv_heads, float scale, int64_t window,
                            int64_t q_pos0, int64_t ring, bool logit) {
  install_halide_handlers();
  HalideBuffer qb(q), kb(k), vb(v), ob(out);
  RawBuffer ib(sel.index.data(), kI32, {batch, kv_heads, lq, sel.slots});
  RawBuffer gb(sel.gate.data(), halide_type_t(halide_type_float, 32, 1),
               {batch, kv_heads, lq, sel.slots});
  RawBuffer cb(sel.count.data(), kI32, {batch, kv_heads, lq});
  CallContext ctx;
  const int rc = kernel->as<SparsekKernelFn>()(
      &ctx, qb.get(), kb.get(), vb.get(), ib.get(), gb.get(), cb.get(), scale,
      static_cast<int32_t>(std::min<int64_t>(window, std::numeric_limits<int32_t>::max())),
      static_cast<int32_t>(q_pos0), static_cast<int32_t>(ring), logit ? 1 : 0, ob.get());
  if (rc != 0) return kernel_failed(kernel->info.name, rc, ctx);
  return Status::success();
}

Status choose_sparsek(const SparsekOptions& o, const AttentionShape& shape,
                      const KernelEntry** kernel, std::string* reason) {
  KernelRequest request{"sparsek", true, false, o.kernel, false};
  return choose_kernel(request, shape, kernel, reason);
}

// The common path of sparsek_attention(_scored): u_of fills a kv head's Lk scores.
template <typename ScoreFn>
Status attention_common(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const AttentionShape& shape,
                        const SparsekOptions& options, ScoreFn&& u_of, Dispatch* chosen) {
  const KernelEntry* kernel = nullptr;
  std::string reason;
  Status s = choose_sparsek(options, shape, &kernel, &reason);
  if (!s.ok()) return s;
  reason += "; k=" + std::to_string(options.k) + ", w=" + std::to_string(options.window) +
            ", gate " + (options.gate == SparsekGate::value ? "value" : "logit");
  if (chosen != nullptr) *chosen = Dispatch{kernel->info.name, reason, 1};
  Selections sel;
  try {
    sweep_all(shape, options, u_of, &sel);
  } catch (const std::bad_alloc&) {
    return invalid("sparsek: the selections of " + std::to_string(shape.lq) + " rows x " +
                   std::to_string(std::min(options.k, shape.lk)) +
                   " keys per kv head do not fit in memory");
  }
  return run_attention_kernel(kernel, q, k, v, out, sel, shape.lq, shape.batch, shape.kv_heads,
                              resolve_scale(options.has_scale, options.scale, shape.head_dim),
                              options.window, shape.lk - shape.lq, 0,
                              options.gate == SparsekGate::logit);
}

}  // namespace

Status sparsek_scores(const TensorView& x, const TensorView& w_score, float slope,
                      const TensorView& u) {
  static const char* const kU[3] = {"B", "Hkv", "L"};
  if (!std::isfinite(slope)) return invalid("sparsek slope must be finite");
  Status s = check_tensor(u, "u", 3, kU, true);
  if (s.ok()) s = check_host(u, "u");
  if (!s.ok()) return s;
  s = check_scoring(x, w_score, u.shape[0], u.shape[2], u.shape[1]);
  if (!s.ok()) return s;
  if (tensors_overlap(u, x) || tensors_overlap(u, w_score)) {
    return invalid("u overlaps x or w_score in memory");
  }
  parallel_for(u.shape[0] * u.shape[1], [&](int64_t t) {
    const int64_t b = t / u.shape[1], h = t % u.shape[1];
    std::vector<float> row(static_cast<size_t>(u.shape[2]));
    score_rows(x, w_score, slope, b, h, 0, u.shape[2], row.data());
    float* dst = static_cast<float*>(u.data) + b * u.strides[0] + h * u.strides[1];
    for (int64_t j = 0; j < u.shape[2]; ++j) dst[j * u.strides[2]] = row[static_cast<size_t>(j)];
  });
  return Status::success();
}

Status sparsek_mask(const TensorView& z, const std::vector<int64_t>* lengths, int64_t k,
                    const TensorView& p, const TensorView& tau, Dispatch* chosen) {
  static const char* const kZ[2] = {"rows", "m"};
  static const char* const kT[1] = {"rows"};
  if (k < 0) return invalid("sparsek budget k must be >= 0, got " + std::to_string(k));
  Status s = check_tensor(z, "z", 2, kZ, false);
  if (s.ok()) s = check_tensor(p, "p", 2, kZ, true);
  if (s.ok()) s = check_tensor(tau, "tau", 1, kT, true);
  for (const auto& [t, name] : {std::pair{&z, "z"}, {&p, "p"}, {&tau, "tau"}}) {
    if (s.ok()) s = check_host(*t, name);
  }
  if (!s.ok()) return s;
  const int64_t rows = z.shape[0], m = z.shape[1];
  if (p.shape[0] != rows || p.shape[1] != m) {
    return invalid("p must have z's shape " + shape_str(z) + ", got " + shape_str(p));
  }
  if (tau.shape[0] != rows) {
    return invalid("tau must be [rows] = [" + std::to_string(rows) + "], got " + shape_str(tau));
  }
  if (tensors_overlap(p, z) || tensors_overlap(tau, z) || tensors_overlap(p, tau)) {
    return invalid("p, tau and z must not overlap in memory");
  }
  std::vector<int32_t> len(static_cast<size_t>(rows), static_cast<int32_t>(m));
  if (lengths != nullptr) {
    if (static_cast<int64_t>(lengths->size()) != rows) {
      return invalid("lengths has " + std::to_string(lengths->size()) + " entries for " +
                     std::to_string(rows) + " rows");
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = (*lengths)[static_cast<size_t>(r)];
      if (n < 0 || n > m) {
        return invalid("lengths[" + std::to_string(r) + "] = " + std::to_string(n) +
                       " is outside [0, m=" + std::to_string(m) + "]");
      }
      len[static_cast<size_t>(r)] = static_cast<int32_t>(n);
    }
  }
  AttentionShape shape;
  shape.batch = rows;
  shape.lq = rows;
  shape.lk = m;
  KernelRequest request{"sparsek_mask", false, false, "", false};
  const KernelEntry* kernel = nullptr;
  std::string reason;
  s = choose_kernel(request, shape, &kernel, &reason);
  if (!s.ok()) return s;
  if (chosen != nullptr) *chosen = Dispatch{kernel->info.name, "k=" + std::to_string(k), 1};
  install_halide_handlers();
  HalideBuffer zb(z), pb(p), tb(tau);
  RawBuffer lb(len.data(), kI32, {rows});
  CallContext ctx;
  const int rc = kernel->as<SparsekMaskKernelFn>()(
      &ctx, zb.get(), lb.get(),
      static_cast<int32_t>(std::min<int64_t>(k, std::numeric_limits<int32_t>::max())), pb.get(),
      tb.get());
  if (rc != 0) return kernel_failed(kernel->info.name, rc, ctx);
  return Status::success();
}

Status sparsek_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& x, const TensorView& w_score, const TensorView& out,
                         const SparsekOptions& options, Dispatch* chosen) {
  AttentionShape shape;
  Status s = validate_cpu_attention("sparsek", q, k, v, out, true, options.has_scale, options.scale,
                                    &shape);
  if (s.ok()) s = check_options(options);
  if (s.ok()) s = check_scoring(x, w_score, shape.batch, shape.lk, shape.kv_heads);
  if (!s.ok()) return s;
  if (tensors_overlap(out, x)) return invalid("out overlaps x in memory");
  if (tensors_overlap(out, w_score)) return invalid("out overlaps w_score in memory");
  if (options.check_finite) {
    const TensorView* views[] = {&q, &k, &v, &x, &w_score};
    const char* names[] = {"q", "k", "v", "x", "w_score"};
    s = finite_or_refuse(views, names, 5);
    if (!s.ok()) return s;
  }
  auto u_of = [&](int64_t b, int64_t h, float* u) {
    score_rows(x, w_score, options.slope, b, h, 0, shape.lk, u);
  };
  return attention_common(q, k, v, out, shape, options, u_of, chosen);
}

Status sparsek_attention_scored(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& u, const TensorView& out,
                                const SparsekOptions& options, Dispatch* chosen) {
  static const char* const kU[3] = {"B", "Hkv", "Lk"};
  AttentionShape shape;
  Status s = validate_cpu_attention("sparsek", q, k, v, out, true, options.has_scale, options.scale,
                                    &shape);
  if (s.ok()) s = check_options(options);
  if (s.ok()) s = check_tensor(u, "u", 3, kU, false);
  if (s.ok()) s = check_host(u, "u");
  if (!s.ok()) return s;
  if (u.shape[0] != shape.batch || u.shape[1] != shape.kv_heads || u.shape[2] != shape.lk) {
    return invalid("u must be [B, Hkv, Lk] = [" + std::to_string(shape.batch) + ", " +
                   std::to_string(shape.kv_heads) + ", " + std::to_string(shape.lk) + "], got " +
                   shape_str(u));
  }
  if (tensors_overlap(out, u)) return invalid("out overlaps u in memory");
  if (options.check_finite) {
    const TensorView* views[] = {&q, &k, &v, &u};
    const char* names[] = {"q", "k", "v", "u"};
    s = finite_or_refuse(views, names, 4);
    if (!s.ok()) return s;
  }
  auto u_of = [&](int64_t b, int64_t h, float* dst) {
    const float* src = fptr(u) + b * u.strides[0] + h * u.strides[1];
    for (int64_t j = 0; j < shape.lk; ++j) dst[j] = src[j * u.strides[2]];
  };
  return attention_common(q, k, v, out, shape, options, u_of, chosen);
}

// --- bounded-cache decode ------------------------------------------------------------------

struct SparsekDecoder::State {
  int64_t batch = 0, q_heads = 0, kv_heads = 0, head_dim = 0, model_dim = 0;
  SparsekOptions options;
  std::vector<float> w;              // [Hkv, Dm]
  int64_t cap = 0;                   // KV slots per head: w ring slots, then k selected
  std::vector<float> kc, vc;         // [B, Hkv, cap, D]
  std::vector<float> u_ring;         // [B, Hkv, w]: scores of the window's keys
  std::vector<SparsekSweep> sweeps;  // [B, Hkv]
  Selections sel;
  int64_t pos = 0;
};

namespace {

// Token st.pos of kv head t (= b * Hkv + h) enters the cache: scored, put in the window's ring,
// and the key leaving the window (or, with w = 0, the token itself) offered to the selection;
// if it is among the k largest it takes the slot of the one it evicts.
void absorb_token(SparsekDecoder::State& st, int64_t t, const float* k_new, const float* v_new,
                  const float* x_row) {
  const int64_t w = st.options.window, D = st.head_dim, p = st.pos;
  const size_t row_bytes = static_cast<size_t>(D) * sizeof(float);
  const float* wr = &st.w[static_cast<size_t>((t % st.kv_heads) * st.model_dim)];
  float acc = 0.f;
  for (int64_t m = 0; m < st.model_dim; ++m) acc += wr[m] * x_row[m];
  const float u_new = acc + st.options.slope * static_cast<float>(p);
  float* kbase = &st.kc[static_cast<size_t>(t * st.cap * D)];
  float* vbase = &st.vc[static_cast<size_t>(t * st.cap * D)];
  SparsekSweep& sweep = st.sweeps[static_cast<size_t>(t)];
  if (w > 0) {
    const int64_t ring = p % w;
    float& u_slot = st.u_ring[static_cast<size_t>(t * w + ring)];
    if (p >= w) {  // key p - w leaves the window and becomes a candidate
      const int32_t slot = sweep.push(u_slot, p - w);
      if (slot >= 0) {
        std::memcpy(kbase + (w + slot) * D, kbase + ring * D, row_bytes);
        std::memcpy(vbase + (w + slot) * D, vbase + ring * D, row_bytes);
      }
    }
    std::memcpy(kbase + ring * D, k_new, row_bytes);
    std::memcpy(vbase + ring * D, v_new, row_bytes);
    u_slot = u_new;
  } else {
    const int32_t slot = sweep.push(u_new, p);
    if (slot >= 0) {
      std::memcpy(kbase + slot * D, k_new, row_bytes);
      std::memcpy(vbase + slot * D, v_new, row_bytes);
    }
  }
}

// The decoder's buffers, all sized by k + w up front (bad_alloc when they do not fit).
void allocate_decoder_cache(SparsekDecoder::State* st, size_t heads, const SparsekOptions& o) {
  st->kc.assign(heads * static_cast<size_t>(st->cap * st->head_dim), 0.f);
  st->vc.assign(st->kc.size(), 0.f);
  st->u_ring.assign(heads * static_cast<size_t>(o.window), 0.f);
  st->sweeps.assign(heads, SparsekSweep(o.k));
  st->sel.slots = std::max<int64_t>(1, o.k);
  st->sel.index.assign(heads * static_cast<size_t>(st->sel.slots), 0);
  st->sel.gate.assign(st->sel.index.size(), 0.f);
  st->sel.count.assign(heads, 0);
}

}  // namespace

SparsekDecoder::SparsekDecoder() = default;
SparsekDecoder::~SparsekDecoder() = default;

Status SparsekDecoder::reset(int64_t batch, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                             const TensorView& w_score, const SparsekOptions& options) {
  state_.reset();
  Status s = check_options(options);
  if (!s.ok()) return s;
  if (batch < 1 || q_heads < 1 || kv_heads < 1 || head_dim < 1) {
    return invalid("SparsekDecoder sizes must be >= 1, got B=" + std::to_string(batch) +
                   " Hq=" + std::to_string(q_heads) + " Hkv=" + std::to_string(kv_heads) +
                   " D=" + std::to_string(head_dim));
  }
  if (q_heads % kv_heads != 0) {
    return invalid("Hq=" + std::to_string(q_heads) +
                   " is not a multiple of Hkv=" + std::to_string(kv_heads));
  }
  static const char* const kW[2] = {"Hkv", "Dm"};
  s = check_tensor(w_score, "w_score", 2, kW, false);
  if (s.ok()) s = check_host(w_score, "w_score");
  if (!s.ok()) return s;
  if (w_score.shape[0] != kv_heads) {
    return invalid("w_score must be [Hkv=" + std::to_string(kv_heads) + ", Dm], got " +
                   shape_str(w_score));
  }
  auto st = std::make_unique<State>();
  st->batch = batch;
  st->q_heads = q_heads;
  st->kv_heads = kv_heads;
  st->head_dim = head_dim;
  st->model_dim = w_score.shape[1];
  st->options = options;
  st->w.resize(static_cast<size_t>(kv_heads * st->model_dim));
  for (int64_t h = 0; h < kv_heads; ++h) {
    std::memcpy(&st->w[static_cast<size_t>(h * st->model_dim)],
                fptr(w_score) + h * w_score.strides[0],
                static_cast<size_t>(st->model_dim) * sizeof(float));
  }
  st->cap = options.window + options.k;
  const size_t heads = static_cast<size_t>(batch * kv_heads);
  // k + w pairs of D floats per kv head, twice (keys and values): refused before allocating when
  // the count alone overflows (a vector that large throws length_error, not bad_alloc).
  const bool overflows =
      static_cast<__int128>(heads) * st->cap * head_dim > (static_cast<__int128>(1) << 60);
  try {
    if (overflows) throw std::bad_alloc();
    allocate_decoder_cache(st.get(), heads, options);
  } catch (const std::exception&) {  // bad_alloc or length_error
    return invalid("SparsekDecoder: a cache of k + w = " + std::to_string(st->cap) +
                   " KV pairs per kv head (" + std::to_string(heads) +
                   " kv heads, D=" + std::to_string(head_dim) + ") does not fit in memory");
  }
  state_ = std::move(st);
  return Status::success();
}

int64_t SparsekDecoder::position() const { return state_ ? state_->pos : 0; }

int64_t SparsekDecoder::cached_pairs() const {
  if (!state_) return 0;
  int64_t most = 0;
  for (const SparsekSweep& sw : state_->sweeps) {
    most = std::max<int64_t>(most, static_cast<int64_t>(sw.top().size()));
  }
  return std::min(state_->pos, state_->options.window) + most;
}

int64_t SparsekDecoder::mask_scores() const {
  if (!state_) return 0;
  int64_t most = 0;
  for (const SparsekSweep& sw : state_->sweeps) most = std::max(most, sw.live_scores());
  return most;
}

Status SparsekDecoder::append(const TensorView& k, const TensorView& v, const TensorView& x) {
  if (!state_) return invalid("SparsekDecoder::append before a successful reset()");
  State& st = *state_;
  static const char* const kKV[4] = {"B", "Hkv", "T", "D"};
  static const char* const kX[3] = {"B", "T", "Dm"};
  Status s = check_tensor(k, "k", 4, kKV, false);
  if (s.ok()) s = check_tensor(v, "v", 4, kKV, false);
  if (s.ok()) s = check_tensor(x, "x", 3, kX, false);
  for (const auto& [t, name] : {std::pair{&k, "k"}, {&v, "v"}, {&x, "x"}}) {
    if (s.ok()) s = check_host(*t, name);
  }
  if (!s.ok()) return s;
  const int64_t T = k.shape[2];
  for (int i = 0; i < 4; ++i) {
    if (k.shape[i] != v.shape[i]) {
      return invalid("k and v must have the same shape, got k " + shape_str(k) + " and v " +
                     shape_str(v));
    }
  }
  if (k.shape[0] != st.batch || k.shape[1] != st.kv_heads || k.shape[3] != st.head_dim) {
    return invalid("SparsekDecoder::append takes k, v [B=" + std::to_string(st.batch) +
                   ", Hkv=" + std::to_string(st.kv_heads) +
                   ", T, D=" + std::to_string(st.head_dim) + "], got " + shape_str(k));
  }
  if (x.shape[0] != st.batch || x.shape[1] != T || x.shape[2] != st.model_dim) {
    return invalid("x must be [B=" + std::to_string(st.batch) + ", T=" + std::to_string(T) +
                   ", Dm=" + std::to_string(st.model_dim) + "], got " + shape_str(x));
  }
  if (st.pos + T >= std::numeric_limits<int32_t>::max()) return invalid("sequence too long (2^31)");
  for (int64_t j = 0; j < T; ++j) {
    for (int64_t b = 0; b < st.batch; ++b) {
      for (int64_t h = 0; h < st.kv_heads; ++h) {
        absorb_token(st, b * st.kv_heads + h,
                     fptr(k) + b * k.strides[0] + h * k.strides[1] + j * k.strides[2],
                     fptr(v) + b * v.strides[0] + h * v.strides[1] + j * v.strides[2],
                     fptr(x) + b * x.strides[0] + j * x.strides[1]);
      }
    }
    ++st.pos;
  }
  return Status::success();
}

Status SparsekDecoder::step(const TensorView& q, const TensorView& k, const TensorView& v,
                            const TensorView& x, const TensorView& out, Dispatch* chosen) {
  if (!state_) return invalid("SparsekDecoder::step before a successful reset()");
  State& st = *state_;
  const SparsekOptions& o = st.options;
  AttentionShape shape;
  Status s = validate_cpu_attention("sparsek", q, k, v, out, true, o.has_scale, o.scale, &shape);
  if (!s.ok()) return s;
  if (shape.batch != st.batch || shape.q_heads != st.q_heads || shape.kv_heads != st.kv_heads ||
      shape.head_dim != st.head_dim || shape.lq != 1 || shape.lk != 1) {
    return invalid("SparsekDecoder::step takes q [B=" + std::to_string(st.batch) +
                   ", Hq=" + std::to_string(st.q_heads) + ", 1, D=" + std::to_string(st.head_dim) +
                   "] and k, v [B, Hkv=" + std::to_string(st.kv_heads) + ", 1, D], got q " +
                   shape_str(q) + ", k " + shape_str(k));
  }
  static const char* const kX[3] = {"B", "1", "Dm"};
  s = check_tensor(x, "x", 3, kX, false);
  if (s.ok()) s = check_host(x, "x");
  if (!s.ok()) return s;
  if (x.shape[0] != st.batch || x.shape[1] != 1 || x.shape[2] != st.model_dim) {
    return invalid("x must be [B=" + std::to_string(st.batch) +
                   ", 1, Dm=" + std::to_string(st.model_dim) + "], got " + shape_str(x));
  }
  if (st.pos >= std::numeric_limits<int32_t>::max()) return invalid("sequence too long (2^31)");
  if (o.check_finite) {
    const TensorView* views[] = {&q, &k, &v, &x};
    const char* names[] = {"q", "k", "v", "x"};
    s = finite_or_refuse(views, names, 4);
    if (!s.ok()) return s;
  }

  const int64_t w = o.window, D = st.head_dim, p = st.pos;
  const size_t row_bytes = static_cast<size_t>(D) * sizeof(float);
  for (int64_t b = 0; b < st.batch; ++b) {
    for (int64_t h = 0; h < st.kv_heads; ++h) {
      const int64_t t = b * st.kv_heads + h;
      absorb_token(st, t, fptr(k) + b * k.strides[0] + h * k.strides[1],
                   fptr(v) + b * v.strides[0] + h * v.strides[1], fptr(x) + b * x.strides[0]);
      SparsekSweep& sweep = st.sweeps[static_cast<size_t>(t)];
      int32_t* idx = &st.sel.index[static_cast<size_t>(t * st.sel.slots)];
      const int32_t n =
          o.k > 0 ? sweep.select(idx, &st.sel.gate[static_cast<size_t>(t * st.sel.slots)], true)
                  : 0;
      for (int32_t s2 = 0; s2 < n; ++s2) idx[s2] += static_cast<int32_t>(w);
      st.sel.count[static_cast<size_t>(t)] = n;
    }
  }
  st.pos = p + 1;
  if (st.cap == 0) {  // k = w = 0: no key is ever attended, and a row with none outputs zeros
    for (int64_t b = 0; b < st.batch; ++b) {
      for (int64_t h = 0; h < st.q_heads; ++h) {
        std::memset(static_cast<float*>(out.data) + b * out.strides[0] + h * out.strides[1], 0,
                    row_bytes);
      }
    }
    if (chosen != nullptr) *chosen = Dispatch{"", "k = w = 0: no key to attend", 0};
    return Status::success();
  }

  AttentionShape cache_shape = shape;
  cache_shape.lk = st.cap;
  const KernelEntry* kernel = nullptr;
  std::string reason;
  s = choose_sparsek(o, cache_shape, &kernel, &reason);
  if (!s.ok()) return s;
  if (chosen != nullptr) {
    *chosen =
        Dispatch{kernel->info.name,
                 reason + "; bounded cache of " + std::to_string(st.cap) + " KV slots per head", 1};
  }
  TensorView kv = TensorView::contiguous(st.kc.data(), {st.batch, st.kv_heads, st.cap, D});
  TensorView vv = TensorView::contiguous(st.vc.data(), {st.batch, st.kv_heads, st.cap, D});
  return run_attention_kernel(kernel, q, kv, vv, out, st.sel, 1, st.batch, st.kv_heads,
                              resolve_scale(o.has_scale, o.scale, D), w, p, w,
                              o.gate == SparsekGate::logit);
}

}  // namespace hattn
