"""hattn behind PyTorch's attention call.

``scaled_dot_product_attention`` has torch.nn.functional's signature and runs hattn's dense kernels
(on CPU tensors, float32/bfloat16/float16; CUDA float32 tensors where the build has CUDA kernels).
It refuses, with the reason, what hattn does not compute: an arbitrary ``attn_mask``, dropout,
gradients, ``is_causal`` with Lq != Lk (PyTorch aligns that mask top-left, hattn bottom-right),
value head dims different from the queries'.

``use(variant, ...)`` routes every ``torch.nn.functional.scaled_dot_product_attention`` call made
inside it (a Hugging Face model with ``attn_implementation="sdpa"`` makes one per layer) through a
hattn variant:

    with hattn.torch.use("topk", top_k=32):
        embeddings = model(**inputs)
"""
import contextlib

import torch
import torch.nn.functional as F

import hattn

_sdpa = F.scaled_dot_product_attention  # PyTorch's own, kept when use() patches it


def _as_bhld(x, name):
    """A [B, H, L, D] view of a rank-3 ([B, L, D]) or rank-4 tensor, innermost stride 1."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() != 4:
        raise hattn.InvalidArgument(
            f"{name} has {x.dim()} dimensions; hattn takes [B, H, L, D] or [B, L, D]")
    if x.stride(-1) != 1:
        x = x.contiguous()  # the one copy: hattn reads rows with stride 1
    return x


def _check_call(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa):
    if attn_mask is not None:
        raise hattn.Unsupported(
            "attn_mask is not supported: hattn computes full or causal (bottom-right) "
            "attention; use is_causal, or PyTorch's SDPA for arbitrary masks")
    if dropout_p:
        raise hattn.Unsupported("dropout_p > 0: hattn is for inference (no dropout)")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)):
        raise hattn.Unsupported(
            "hattn is forward-only: run under torch.no_grad() or torch.inference_mode()")
    if value.shape[-1] != query.shape[-1]:
        raise hattn.Unsupported(
            f"value head dim {value.shape[-1]} differs from the queries' {query.shape[-1]}")
    if is_causal and query.shape[-2] != key.shape[-2]:
        raise hattn.Unsupported(
            "is_causal with Lq != Lk: PyTorch aligns that mask top-left and hattn bottom-right "
            "(the two agree only for Lq == Lk)")
    if query.dim() == 4 and query.shape[1] != key.shape[1] and not enable_gqa:
        raise hattn.InvalidArgument(
            f"query has {query.shape[1]} heads and key {key.shape[1]}: pass enable_gqa=True "
            "for grouped-query attention (as PyTorch requires)")


def _sdpa_with(attend, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """PyTorch's SDPA contract around attend(q, k, v, causal, scale) on [B, H, L, D] tensors."""
    _check_call(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    rank3 = query.dim() == 3
    q, k, v = (_as_bhld(t, n) for t, n in ((query, "query"), (key, "key"), (value, "value")))
    out = attend(q, k, v, is_causal, scale)
    return out.squeeze(1) if rank3 else out


def _dense(q, k, v, causal, scale):
    return hattn.attention(q, k, v, causal=causal, scale=scale)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """torch.nn.functional.scaled_dot_product_attention, computed by hattn.attention."""
    return _sdpa_with(_dense, query, key, value, attn_mask, dropout_p, is_causal, scale,
                      enable_gqa)


class _Router:
    """The patched SDPA of use(): one hattn variant for every call, the layer counted by call."""

    def __init__(self, variant, knobs):
        self.knobs = dict(knobs)
        self.bases = self.knobs.pop("bases", None)
        self.attend = {"dense": _dense, "topk": self._topk, "loki": self._loki}[variant]
        self.calls = 0

    def _topk(self, q, k, v, causal, scale):
        return hattn.topk_attention(q, k, v, self.knobs["top_k"], causal=causal, scale=scale)

    def _loki(self, q, k, v, causal, scale):
        layer = self.calls % len(self.bases)
        basis = self.bases[layer]
        k_rot = hattn.loki_rotate(k.contiguous(), basis)
        # Each layer's basis is checked on its first call only, as a decode loop would.
        return hattn.loki_attention(q, k_rot, v, basis, causal=causal, scale=scale,
                                    check_basis=self.calls < len(self.bases), **self.knobs)

    def __call__(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                 scale=None, enable_gqa=False):
        out = _sdpa_with(self.attend, query, key, value, attn_mask, dropout_p, is_causal, scale,
                         enable_gqa)
        self.calls += 1
        return out


@contextlib.contextmanager
def use(variant="dense", **knobs):
    """Runs every torch.nn.functional.scaled_dot_product_attention call inside it through hattn.

    variant "dense"; "topk" with top_k=; "loki" with bases= (one [Hkv, D, D] tensor per layer,
    in call order, e.g. from hattn.loki_calibrate) and rank_fraction=/rank=, top_fraction=/top_k=.
    Yields the router, whose ``calls`` counts the attention calls made."""
    if variant not in ("dense", "topk", "loki"):
        raise hattn.InvalidArgument(f"unknown variant '{variant}' (dense, topk, loki)")
    if variant == "topk" and "top_k" not in knobs:
        raise hattn.InvalidArgument("use('topk') needs top_k=")
    if variant == "loki" and not knobs.get("bases"):
        raise hattn.InvalidArgument("use('loki') needs bases= (one basis per layer)")
    router = _Router(variant, knobs)
    F.scaled_dot_product_attention = router
    try:
        yield router
    finally:
        F.scaled_dot_product_attention = _sdpa
