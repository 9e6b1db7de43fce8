// hattn::SparsekDecoder: token-by-token SPARSEK with a bounded cache per kv head (the window's
// ring and the k selected older keys) and the sweep state the mask still needs.
#include <algorithm>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "sparsek_internal.h"
#include "sparsek_sweep.h"

namespace hattn {

struct SparsekDecoder::State {
  int64_t batch = 0, q_heads = 0, kv_heads = 0, head_dim = 0, model_dim = 0;
  SparsekOptions options;
  DType dtype = DType::f32;           // of the cache, and of every step's q, k, v and out
  std::vector<float> w;               // [Hkv, Dm] (fp32, whatever w_score's dtype)
  int64_t cap = 0;                    // KV slots per head: w ring slots, then k selected
  std::vector<unsigned char> kc, vc;  // [B, Hkv, cap, D] elements of `dtype`
  std::vector<float> u_ring;          // [B, Hkv, w]: scores of the window's keys
  std::vector<SparsekSweep> sweeps;   // [B, Hkv]
  Selections sel;
  int64_t pos = 0;
};

namespace {

// Element `offset` of a view, as bytes (a K or V row is copied as stored, in its dtype).
const unsigned char* bytes_at(const TensorView& t, int64_t offset) {
  return static_cast<const unsigned char*>(t.data) + offset * element_size(t.dtype);
}

// Refuses a k or v (append) or a step's tensor whose dtype is not the cache's.
Status check_cache_dtype(const SparsekDecoder::State& st, const TensorView& t, const char* name) {
  if (t.dtype == st.dtype) return Status::success();
  return invalid(std::string("SparsekDecoder holds a ") + to_string(st.dtype) +
                 " cache (reset's dtype); " + name + " is " + to_string(t.dtype));
}

// Token st.pos of kv head t (= b * Hkv + h) enters the cache: scored, put in the window's ring,
// and the key leaving the window (or, with w = 0, the token itself) offered to the selection;
// if it is among the k largest it takes the slot of the one it evicts.
void absorb_token(SparsekDecoder::State& st, int64_t t, const unsigned char* k_new,
                  const unsigned char* v_new, const float* x_row) {
  const int64_t w = st.options.window, p = st.pos;
  const size_t row_bytes = static_cast<size_t>(st.head_dim) * element_size(st.dtype);
  const auto row = static_cast<int64_t>(row_bytes);  // slot offsets, in bytes
  const float* wr = &st.w[static_cast<size_t>((t % st.kv_heads) * st.model_dim)];
  const float u_new = score_one(wr, x_row, st.model_dim, st.options.slope, p);
  unsigned char* kbase = &st.kc[static_cast<size_t>(t * st.cap * row)];
  unsigned char* vbase = &st.vc[static_cast<size_t>(t * st.cap * row)];
  SparsekSweep& sweep = st.sweeps[static_cast<size_t>(t)];
  if (w > 0) {
    const int64_t ring = p % w;
    float& u_slot = st.u_ring[static_cast<size_t>(t * w + ring)];
    if (p >= w) {  // key p - w leaves the window and becomes a candidate
      const int32_t slot = sweep.push(u_slot, p - w);
      if (slot >= 0) {
        std::memcpy(kbase + (w + slot) * row, kbase + ring * row, row_bytes);
        std::memcpy(vbase + (w + slot) * row, vbase + ring * row, row_bytes);
      }
    }
    std::memcpy(kbase + ring * row, k_new, row_bytes);
    std::memcpy(vbase + ring * row, v_new, row_bytes);
    u_slot = u_new;
  } else {
    const int32_t slot = sweep.push(u_new, p);
    if (slot >= 0) {
      std::memcpy(kbase + slot * row, k_new, row_bytes);
      std::memcpy(vbase + slot * row, v_new, row_bytes);
    }
  }
}

// The decoder's buffers, all sized by k + w up front (bad_alloc when they do not fit).
void allocate_decoder_cache(SparsekDecoder::State* st, size_t heads, const SparsekOptions& o) {
  st->kc.assign(heads * static_cast<size_t>(st->cap * st->head_dim) * element_size(st->dtype), 0);
  st->vc.assign(st->kc.size(), 0);
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
                             const TensorView& w_score, const SparsekOptions& options,
                             DType dtype) {
  state_.reset();
  Status s = check_sparsek_options(options);
  if (!s.ok()) return s;
  if (dtype != DType::f32 && dtype != DType::bf16 && dtype != DType::f16) {
    return invalid("SparsekDecoder dtype must be f32, bf16 or f16, got the value " +
                   std::to_string(static_cast<int>(dtype)));
  }
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
  s = check_tensor(w_score, "w_score", 2, kW, false, /*any_dtype=*/true);
  if (s.ok()) s = check_sparsek_host(w_score, "w_score");
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
  st->dtype = dtype;
  st->w.resize(static_cast<size_t>(kv_heads * st->model_dim));
  std::vector<float> scratch;
  for (int64_t h = 0; h < kv_heads; ++h) {
    std::memcpy(&st->w[static_cast<size_t>(h * st->model_dim)],
                row_f32(w_score, h * w_score.strides[0], st->model_dim, &scratch),
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
  Status s = check_tensor(k, "k", 4, kKV, false, /*any_dtype=*/true);
  if (s.ok()) s = check_tensor(v, "v", 4, kKV, false, /*any_dtype=*/true);
  if (s.ok()) s = check_tensor(x, "x", 3, kX, false, /*any_dtype=*/true);
  for (const auto& [t, name] : {std::pair{&k, "k"}, {&v, "v"}, {&x, "x"}}) {
    if (s.ok()) s = check_sparsek_host(*t, name);
  }
  if (s.ok()) s = check_cache_dtype(st, k, "k");
  if (s.ok()) s = check_cache_dtype(st, v, "v");
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
  std::vector<float> scratch;
  for (int64_t j = 0; j < T; ++j) {
    for (int64_t b = 0; b < st.batch; ++b) {
      const float* x_row = row_f32(x, b * x.strides[0] + j * x.strides[1], st.model_dim, &scratch);
      for (int64_t h = 0; h < st.kv_heads; ++h) {
        absorb_token(st, b * st.kv_heads + h,
                     bytes_at(k, b * k.strides[0] + h * k.strides[1] + j * k.strides[2]),
                     bytes_at(v, b * v.strides[0] + h * v.strides[1] + j * v.strides[2]), x_row);
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
  Status s = validate_cpu_attention("sparsek", q, k, v, out, true, o, &shape, nullptr,
                                    /*sixteen_bit=*/true);
  if (s.ok()) s = check_cache_dtype(st, q, "q");
  if (!s.ok()) return s;
  if (shape.batch != st.batch || shape.q_heads != st.q_heads || shape.kv_heads != st.kv_heads ||
      shape.head_dim != st.head_dim || shape.lq != 1 || shape.lk != 1) {
    return invalid("SparsekDecoder::step takes q [B=" + std::to_string(st.batch) +
                   ", Hq=" + std::to_string(st.q_heads) + ", 1, D=" + std::to_string(st.head_dim) +
                   "] and k, v [B, Hkv=" + std::to_string(st.kv_heads) + ", 1, D], got q " +
                   shape_str(q) + ", k " + shape_str(k));
  }
  static const char* const kX[3] = {"B", "1", "Dm"};
  s = check_tensor(x, "x", 3, kX, false, /*any_dtype=*/true);
  if (s.ok()) s = check_sparsek_host(x, "x");
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
  const size_t row_bytes = static_cast<size_t>(D) * element_size(st.dtype);
  std::vector<float> scratch;
  for (int64_t b = 0; b < st.batch; ++b) {
    const float* x_row = row_f32(x, b * x.strides[0], st.model_dim, &scratch);
    for (int64_t h = 0; h < st.kv_heads; ++h) {
      const int64_t t = b * st.kv_heads + h;
      absorb_token(st, t, bytes_at(k, b * k.strides[0] + h * k.strides[1]),
                   bytes_at(v, b * v.strides[0] + h * v.strides[1]), x_row);
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
        std::memset(static_cast<unsigned char*>(out.data) +
                        (b * out.strides[0] + h * out.strides[1]) * element_size(out.dtype),
                    0, row_bytes);
      }
    }
    if (chosen != nullptr) *chosen = Dispatch{"", "k = w = 0: no key to attend", 0};
    return Status::success();
  }

  AttentionShape cache_shape = shape;
  cache_shape.lk = st.cap;
  SparsekKernel kernel;
  std::string reason;
  s = choose_sparsek(o, cache_shape, &kernel, &reason);
  if (!s.ok()) return s;
  if (chosen != nullptr) {
    *chosen =
        Dispatch{kernel.name(),
                 reason + "; bounded cache of " + std::to_string(st.cap) + " KV slots per head", 1};
  }
  TensorView kv =
      TensorView::contiguous(st.kc.data(), st.dtype, {st.batch, st.kv_heads, st.cap, D});
  TensorView vv =
      TensorView::contiguous(st.vc.data(), st.dtype, {st.batch, st.kv_heads, st.cap, D});
  return run_sparsek_kernel(kernel, q, kv, vv, out, st.sel, cache_shape, o, SparsekKeys{p, w});
}

}  // namespace hattn
