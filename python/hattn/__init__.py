"""hattn: attention kernels generated ahead of time by Halide, from Python.

Every function takes NumPy arrays or PyTorch tensors (CPU; CUDA tensors for ``attention``) and
passes them to the C++ library without a copy: shapes and strides as they are, with the last
dimension contiguous, as hattn's C++ API (README "Using the library"). float32 everywhere; bfloat16
and float16 where the C++ call takes them (``attention``, ``paged_attention``, ``ragged_attention``).
Outputs are written into ``out=`` when given, else allocated like the queries (a NumPy array or a
tensor of the same dtype and device) and returned. The GIL is released while a kernel runs, so
calls from several Python threads run in parallel.

A refused call raises ``hattn.Error`` (``InvalidArgument`` also derives from ValueError,
``Unsupported`` from NotImplementedError) carrying the library's message, and writes nothing.

    import numpy as np, hattn
    q = np.random.randn(1, 8, 128, 64).astype(np.float32)
    k = np.random.randn(1, 8, 128, 64).astype(np.float32)
    v = np.random.randn(1, 8, 128, 64).astype(np.float32)
    out = hattn.attention(q, k, v, causal=True)
"""
from . import _hattn

__all__ = [
    "Error", "InvalidArgument", "Unsupported", "NonFiniteInput", "KernelError", "NoDevice",
    "attention", "topk_attention", "topk_ffn", "loki_attention", "loki_calibrate",
    "loki_rotate", "loki_check_basis", "loki_captured_variance", "el_attention", "mha_attention",
    "sparsek_scores", "sparsek_mask", "sparsek_attention", "SparsekDecoder", "paged_attention",
    "paged_topk_attention", "paged_loki_attention",
    "paged_append", "ragged_attention", "list_kernels", "limit_isa", "isa_limit",
    "set_num_threads", "version",
    "decode_threshold", "cuda_available", "last_dispatch",
]


class Error(RuntimeError):
    """A call hattn refused or could not run; ``code`` is the C++ StatusCode's name."""

    code = "error"


class InvalidArgument(Error, ValueError):
    code = "invalid_argument"


class Unsupported(Error, NotImplementedError):
    code = "unsupported"


class NonFiniteInput(Error, ValueError):
    code = "non_finite_input"


class KernelError(Error):
    code = "kernel_error"


class NoDevice(Error):
    code = "no_device"


# hattn::StatusCode's values, in order.
_ERRORS = {1: InvalidArgument, 2: Unsupported, 3: NonFiniteInput, 4: KernelError, 5: NoDevice}


class Dispatch:
    """What the dispatcher chose for the last call on this thread: kernel name, reason, splits."""

    def __init__(self, kernel, reason, decode_splits):
        self.kernel, self.reason, self.decode_splits = kernel, reason, decode_splits

    def __repr__(self):
        return f"Dispatch(kernel={self.kernel!r}, reason={self.reason!r})"


import threading as _threading

_last = _threading.local()


def last_dispatch():
    """The Dispatch of this thread's last successful call (None before any)."""
    return getattr(_last, "dispatch", None)


def _raise_for(code, message):
    if code:
        raise _ERRORS.get(code, Error)(message)


def _check(result):
    code, message, kernel, reason, splits = result
    _raise_for(code, message)
    _last.dispatch = Dispatch(kernel, reason, splits)


def _is_torch(x):
    return type(x).__module__.startswith("torch")


def _empty(like, shape, dtype=None):
    """An uninitialised output like `like` (NumPy array or torch tensor), of `shape`."""
    if _is_torch(like):
        import torch

        return torch.empty(tuple(shape), dtype=like.dtype if dtype is None else dtype,
                           device=like.device)
    import numpy as np

    return np.empty(tuple(shape), dtype=like.dtype if dtype is None else dtype)


def _f32(like):
    if _is_torch(like):
        import torch

        return torch.float32
    import numpy as np

    return np.float32


def _int32(x, name):
    """Index arrays (page tables, lengths, offsets) as C-contiguous int32 NumPy arrays."""
    import numpy as np

    if _is_torch(x):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise InvalidArgument(f"{name} must hold integers, got dtype {a.dtype}")
    if a.size and (a.min() < -2**31 or a.max() >= 2**31):
        raise InvalidArgument(f"{name} holds values outside int32")
    return np.ascontiguousarray(a, dtype=np.int32)


def _attention_outputs(q, out, lse, return_lse, lse_shape):
    """out (like q unless given) and lse (float32 of lse_shape when asked for and not given)."""
    if out is None:
        out = _empty(q, q.shape)
    if return_lse and lse is None:
        lse = _empty(q, lse_shape, _f32(q))
    return out, lse


def _scale(scale):
    if scale is None:
        return 0.0
    if not scale > 0:
        raise InvalidArgument(f"scale must be > 0 (None: the variant's default), got {scale}")
    return float(scale)


# --- dense ----------------------------------------------------------------------------------


def attention(q, k, v, *, causal=False, scale=None, out=None, lse=None, return_lse=False,
              kernel="", check_finite=False, decode_splits=0):
    """softmax(scale q k^T [causal, bottom-right]) v per (batch, query head).

    q [B, Hq, Lq, D], k and v [B, Hkv, Lk, D] (Hq a multiple of Hkv: GQA), one dtype (float32,
    bfloat16, float16), or in decode (Lq <= 8) a float32 q over a bfloat16/float16 k and v.
    Returns out [B, Hq, Lq, D] in q's dtype, or (out, lse) with return_lse (lse float32
    [B, Hq, Lq])."""
    out, lse = _attention_outputs(q, out, lse, return_lse, q.shape[:3])
    _check(_hattn.attention(q, k, v, out, lse, causal, _scale(scale), kernel, check_finite,
                            decode_splits))
    return (out, lse) if return_lse else out


def topk_attention(q, k, v, top_k, *, causal=False, scale=None, out=None, kernel="",
                   check_finite=False):
    """Attention over each query row's top_k highest-scoring visible keys (Gupta et al. 2021)."""
    if out is None:
        out = _empty(q, q.shape)
    _check(_hattn.topk_attention(q, k, v, out, int(top_k), causal, _scale(scale), kernel,
                                 check_finite))
    return out


def topk_ffn(x, w1, w2t, top_k, *, out=None, kernel="", check_finite=False):
    """relu(x W1^T) W2^T keeping each token's top_k pre-activations; w2t = W2^T [d_ff, D]."""
    if out is None:
        out = _empty(x, x.shape)
    _check(_hattn.topk_ffn(x, w1, w2t, out, int(top_k), kernel, check_finite))
    return out


# --- loki -----------------------------------------------------------------------------------


def loki_attention(q, k_rot, v, basis, *, rank=0, rank_fraction=0.0, top_k=0, top_fraction=0.0,
                   causal=False, scale=None, check_basis=True, basis_tolerance=1e-4, k_lead=None,
                   out=None, kernel="", check_finite=False):
    """Loki (Singhania et al. 2024): approximate scores over the first r rotated channels, the k
    best keys kept, exact softmax over them. k_rot = loki_rotate(k, basis); basis [Hkv, D, D]."""
    if out is None:
        out = _empty(q, q.shape)
    _check(_hattn.loki_attention(q, k_rot, v, basis, out, int(rank), float(rank_fraction),
                                 int(top_k), float(top_fraction), causal, _scale(scale),
                                 check_basis, float(basis_tolerance), k_lead, kernel,
                                 check_finite))
    return out


def _need_prep(name):
    if not _hattn.has_loki_prep:
        raise Unsupported(f"{name} needs hattn_loki_prep (LAPACKE), which this build lacks")


def loki_calibrate(keys, *, variance=0.9):
    """PCA basis of sample keys [(L,) Hkv, N, D]: returns (basis [(L,) Hkv, D, D], variance_ratio
    [(L,) Hkv, D], ranks reaching `variance` per (layer, head))."""
    _need_prep("loki_calibrate")
    basis = _empty(keys, tuple(keys.shape[:-2]) + (keys.shape[-1], keys.shape[-1]))
    ratio = _empty(keys, tuple(keys.shape[:-2]) + (keys.shape[-1],))
    result, ranks = _hattn.loki_calibrate(keys, basis, ratio, float(variance))
    _check(result)
    return basis, ratio, list(ranks)


def loki_rotate(keys, basis, *, out=None):
    """keys P per kv head: keys [B, Hkv, L, D], basis [Hkv, D, D]."""
    _need_prep("loki_rotate")
    if out is None:
        out = _empty(keys, keys.shape)
    _check(_hattn.loki_rotate(keys, basis, out))
    return out


def loki_check_basis(basis, tolerance=1e-4):
    """Raises InvalidArgument unless every head's basis is orthonormal; returns the worst head."""
    result, worst = _hattn.loki_check_basis(basis, float(tolerance))
    _check(result)
    return worst


def loki_captured_variance(keys, basis, *, out=None):
    """Cumulative share of the keys' centred variance in the basis's leading axes, [(L,) Hkv, D]."""
    if out is None:
        out = _empty(keys, tuple(keys.shape[:-2]) + (keys.shape[-1],))
    _check(_hattn.loki_captured_variance(keys, basis, out))
    return out


# --- el -------------------------------------------------------------------------------------

_WEIGHTS = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo")


def _weights(weights):
    if not isinstance(weights, dict):
        raise InvalidArgument("weights must be a dict with wq, wk, wv, wo (and optional biases)")
    unknown = set(weights) - set(_WEIGHTS)
    if unknown:
        raise InvalidArgument(f"weights: unknown entries {sorted(unknown)}")
    return [weights.get(n) for n in _WEIGHTS]


def _el(standard, x, memory, weights, heads, beam, causal, key_lengths, scale, out, kernel,
        check_finite):
    if out is None:
        out = _empty(x, x.shape)
    lengths = None if key_lengths is None else _int32(key_lengths, "key_lengths")
    fn = _hattn.mha_attention if standard else _hattn.el_attention
    _check(fn(x, memory, _weights(weights), out, int(heads), int(beam), causal, lengths,
              _scale(scale), kernel, check_finite))
    return out


def el_attention(x, memory, weights, heads, *, beam=1, causal=False, key_lengths=None,
                 scale=None, out=None, kernel="", check_finite=False):
    """EL-attention (Yan et al. 2021): multi-head attention of x [B*beam, T, Dm] over a memory
    [B, N, Dm] without a per-head cache; weights in nn.MultiheadAttention's convention."""
    return _el(False, x, memory, weights, heads, beam, causal, key_lengths, scale, out, kernel,
               check_finite)


def mha_attention(x, memory, weights, heads, *, beam=1, causal=False, key_lengths=None,
                  scale=None, out=None, kernel="", check_finite=False):
    """The standard multi-head attention path el_attention replaces (same arguments)."""
    return _el(True, x, memory, weights, heads, beam, causal, key_lengths, scale, out, kernel,
               check_finite)


# --- sparsek --------------------------------------------------------------------------------


def sparsek_scores(x, w_score, *, slope=0.0, out=None):
    """u[b, h, j] = w_score[h] . x[b, j] + slope j: x [B, L, Dm], w_score [Hkv, Dm]."""
    if out is None:
        out = _empty(x, (x.shape[0], w_score.shape[0], x.shape[1]))
    _check(_hattn.sparsek_scores(x, w_score, float(slope), out))
    return out


def sparsek_mask(z, budget, *, lengths=None):
    """The SparseK operator on rows of z [rows, m]: returns (p [rows, m], tau [rows])."""
    p = _empty(z, z.shape)
    tau = _empty(z, (z.shape[0],))
    lens = None if lengths is None else [int(n) for n in lengths]
    _check(_hattn.sparsek_mask(z, lens, int(budget), p, tau))
    return p, tau


def sparsek_attention(q, k, v, *, budget, window=0, x=None, w_score=None, u=None, slope=0.0,
                      gate="value", scale=None, out=None, kernel="", check_finite=False):
    """SPARSEK attention (Lou et al. 2024), causal: scores from x and w_score, or given as u."""
    if out is None:
        out = _empty(q, q.shape)
    if u is not None:
        _check(_hattn.sparsek_attention_scored(q, k, v, u, out, int(budget), int(window),
                                               float(slope), gate, _scale(scale), kernel,
                                               check_finite))
    elif x is not None and w_score is not None:
        _check(_hattn.sparsek_attention(q, k, v, x, w_score, out, int(budget), int(window),
                                        float(slope), gate, _scale(scale), kernel, check_finite))
    else:
        raise InvalidArgument("sparsek_attention needs the scores u, or x and w_score")
    return out


class SparsekDecoder:
    """Token-by-token SPARSEK decode with a bounded cache (hattn::SparsekDecoder).

    dtype: the cache's, and every step's q, k, v and out ("f32", "bf16" or "f16")."""

    def __init__(self, batch, q_heads, kv_heads, head_dim, w_score, *, budget, window=0,
                 slope=0.0, gate="value", scale=None, kernel="", check_finite=False,
                 dtype="f32"):
        self._d = _hattn.SparsekDecoder()
        self._w_score = w_score
        _check(self._d.reset(int(batch), int(q_heads), int(kv_heads), int(head_dim), w_score,
                             int(budget), int(window), float(slope), gate, _scale(scale), kernel,
                             check_finite, str(dtype)))

    def step(self, q, k, v, x, *, out=None):
        """One token: q [B, Hq, 1, D], k and v [B, Hkv, 1, D], x [B, 1, Dm]; returns out."""
        if out is None:
            out = _empty(q, q.shape)
        _check(self._d.step(q, k, v, x, out))
        return out

    def append(self, k, v, x):
        """Tokens whose outputs are not needed: k, v [B, Hkv, T, D], x [B, T, Dm]."""
        _check(self._d.append(k, v, x))

    @property
    def position(self):
        return self._d.position

    @property
    def cached_pairs(self):
        return self._d.cached_pairs


# --- batches: paged caches and packed sequences -----------------------------------------------


def paged_attention(q, k_pages, v_pages, page_table, lengths, *, causal=False, scale=None,
                    out=None, lse=None, return_lse=False, kernel="", check_finite=False,
                    decode_splits=0):
    """attention() of q [B, Hq, Lq, D] over each sequence's cached tokens in pages
    k_pages/v_pages [P, Hkv, S, D]; page_table [B, pages_per_seq] and lengths [B] (integers)."""
    out, lse = _attention_outputs(q, out, lse, return_lse, q.shape[:3])
    _check(_hattn.paged_attention(q, k_pages, v_pages, _int32(page_table, "page_table"),
                                  _int32(lengths, "lengths"), out, lse, causal, _scale(scale),
                                  kernel, check_finite, decode_splits))
    return (out, lse) if return_lse else out


def paged_topk_attention(q, k_pages, v_pages, page_table, lengths, top_k, *, causal=False,
                         scale=None, out=None, kernel="", check_finite=False):
    """topk_attention() decode (Lq <= decode_threshold()) over each sequence's cached tokens in
    pages, as paged_attention; k clamped to each sequence's length."""
    if out is None:
        out = _empty(q, q.shape)
    _check(_hattn.paged_topk_attention(q, k_pages, v_pages, _int32(page_table, "page_table"),
                                       _int32(lengths, "lengths"), out, int(top_k), causal,
                                       _scale(scale), kernel, check_finite))
    return out


def paged_loki_attention(q, k_pages, v_pages, page_table, lengths, basis, *, rank=0,
                         rank_fraction=0.0, top_k=0, top_fraction=0.0, causal=False, scale=None,
                         check_basis=True, basis_tolerance=1e-4, k_lead=None, out=None, kernel="",
                         check_finite=False):
    """loki_attention() decode over paged caches: k_pages hold the rotated keys, k_lead (optional)
    their leading channels [P, Hkv, S, R] in the same pages and slots."""
    if out is None:
        out = _empty(q, q.shape)
    _check(_hattn.paged_loki_attention(q, k_pages, v_pages, _int32(page_table, "page_table"),
                                       _int32(lengths, "lengths"), basis, out, int(rank),
                                       float(rank_fraction), int(top_k), float(top_fraction),
                                       causal, _scale(scale), check_basis, float(basis_tolerance),
                                       k_lead, kernel, check_finite))
    return out


def paged_append(k, v, k_pages, v_pages, page_table, lengths):
    """Writes k, v [B, Hkv, T, D] into each sequence's pages at lengths[b] .. lengths[b] + T - 1.
    lengths is not changed: advance it by T after the call."""
    _check(_hattn.paged_append(k, v, k_pages, v_pages, _int32(page_table, "page_table"),
                               _int32(lengths, "lengths")))


def ragged_attention(q, k, v, q_offsets, k_offsets, *, causal=False, scale=None, out=None,
                     lse=None, return_lse=False, kernel="", check_finite=False):
    """Packed sequences (FlashAttention's varlen layout): q [Tq, Hq, D], k and v [Tk, Hkv, D],
    offsets [B + 1] each; sequence b is rows offsets[b] .. offsets[b + 1] - 1."""
    out, lse = _attention_outputs(q, out, lse, return_lse, (1, q.shape[1], q.shape[0]))
    _check(_hattn.ragged_attention(q, k, v, out, _int32(q_offsets, "q_offsets"),
                                   _int32(k_offsets, "k_offsets"), lse, causal, _scale(scale),
                                   kernel, check_finite))
    return (out, lse) if return_lse else out


# --- the library ----------------------------------------------------------------------------


def list_kernels():
    """Every kernel compiled in, as dicts (name, variant, phase, dtype, target, selected_build)."""
    return _hattn.list_kernels()


def limit_isa(level):
    """Caps the CPU build every later call runs: "native" (default), "avx512", "avx2", "sse41"
    (x86) or "neon" (aarch64); list_kernels()' selected_build shows the result. Raises InvalidArgument
    (a ValueError) for an unknown level, leaving the cap as it was."""
    code, message = _hattn.limit_isa(str(level))[:2]
    _raise_for(code, message)  # no kernel ran: last_dispatch() stays the last call's


def isa_limit():
    """The current cap set by limit_isa ("native" by default)."""
    return _hattn.isa_limit()


def set_num_threads(n):
    """Worker threads of the kernels, process-wide (0: the default)."""
    _hattn.set_num_threads(int(n))


def version():
    return _hattn.version()


def decode_threshold():
    return _hattn.decode_threshold()


def cuda_available():
    """(available, reason)."""
    return _hattn.cuda_available()
