"""The hattn package against NumPy float64 references, on random inputs from a printed seed.

Run by ctest (python_package; PYTHONPATH=<build>/python); tests that need PyTorch skip with the
reason where it is not installed (the project's .venv has none; .venv-peer has it).
"""
import os
import platform
import threading

import numpy as np
import pytest

import hattn

SEED = int(os.environ.get("HATTN_SEED", "20261206"), 0)


@pytest.fixture
def rng(request):
    seed = [SEED, sum(map(ord, request.node.name))]
    print(f"[SEED] HATTN_SEED={SEED} test={request.node.name} seed={seed}")
    return np.random.default_rng(seed)


def reference(q, k, v, causal=False, scale=None):
    """float64 attention with GQA and the bottom-right causal mask; rows seeing nothing are 0."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    scale = 1 / np.sqrt(D) if scale is None else scale
    out = np.zeros((B, Hq, Lq, D))
    lse = np.full((B, Hq, Lq), -np.inf)
    for b in range(B):
        for h in range(Hq):
            g = h // (Hq // Hkv)
            s = scale * q[b, h] @ k[b, g].T
            if causal:
                s = np.where(np.arange(Lk)[None, :] <= np.arange(Lq)[:, None] + Lk - Lq, s, -np.inf)
            for i in range(Lq):
                if np.isinf(s[i]).all():
                    continue
                m = s[i].max()
                e = np.exp(s[i] - m)
                out[b, h, i] = e @ v[b, g] / e.sum()
                lse[b, h, i] = m + np.log(e.sum())
    return out, lse


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def close(got, want, tol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.max(np.abs(got - want)) if got.size else 0.0
    assert got.shape == want.shape and err <= tol, f"max |got - want| = {err} > {tol}"


# --- dense ----------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lq,lk", [(7, 19), (1, 33), (16, 16)])
def test_attention_matches_float64(rng, causal, lq, lk):
    q, k, v = randn(rng, 2, 4, lq, 32), randn(rng, 2, 2, lk, 32), randn(rng, 2, 2, lk, 32)
    out, lse = hattn.attention(q, k, v, causal=causal, return_lse=True)
    want, want_lse = reference(q, k, v, causal)
    close(out, want, 2e-5)
    close(lse, want_lse, 2e-5)
    assert out.dtype == np.float32 and isinstance(out, np.ndarray)
    assert hattn.last_dispatch().kernel.startswith("dense_")


def test_attention_writes_out_and_honours_strides(rng):
    # q and out stored [B, L, H, D] (as a model holds them) and passed as [B, H, L, D] views.
    q_blhd, k, v = randn(rng, 1, 9, 4, 16), randn(rng, 1, 4, 12, 16), randn(rng, 1, 4, 12, 16)
    q = q_blhd.transpose(0, 2, 1, 3)
    out_blhd = np.full((1, 9, 4, 16), np.nan, np.float32)
    out = out_blhd.transpose(0, 2, 1, 3)
    got = hattn.attention(q, k, v, out=out, scale=0.3)
    assert got is out
    close(out_blhd.transpose(0, 2, 1, 3), reference(q, k, v, scale=0.3)[0], 2e-5)


def test_attention_float16_native(rng):
    q, k, v = (randn(rng, 1, 2, 5, 64).astype(np.float16) for _ in range(3))
    out = hattn.attention(q, k, v)
    assert out.dtype == np.float16
    close(out, reference(q, k, v)[0], 2e-3)


def test_refusals_raise_and_write_nothing(rng):
    q, k, v = randn(rng, 1, 2, 3, 16), randn(rng, 1, 2, 5, 16), randn(rng, 1, 2, 5, 8)
    out = np.full(q.shape, np.nan, np.float32)
    with pytest.raises(hattn.InvalidArgument) as e:
        hattn.attention(q, k, v, out=out)
    assert "v" in str(e.value) and isinstance(e.value, ValueError)
    assert np.isnan(out).all(), "a refused call wrote out"
    with pytest.raises(hattn.InvalidArgument, match="float32, bfloat16 or float16"):
        hattn.attention(q.astype(np.float64), k, k)
    with pytest.raises(hattn.InvalidArgument, match="rank 4 at most"):
        hattn.attention(q[None], k, k)
    with pytest.raises(hattn.InvalidArgument, match="scale must be > 0"):
        hattn.attention(q, k, k, scale=-1.0)
    with pytest.raises(hattn.Error):
        hattn.attention(q, k, k, kernel="no_such_kernel")


def test_threads_release_the_gil(rng):
    q, k, v = randn(rng, 1, 4, 64, 64), randn(rng, 1, 4, 512, 64), randn(rng, 1, 4, 512, 64)
    want = hattn.attention(q, k, v, causal=True)
    results = [None] * 4

    def work(i):
        results[i] = hattn.attention(q, k, v, causal=True)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, want)


# --- sparse variants ------------------------------------------------------------------------


def test_topk_matches_float64(rng):
    q, k, v = randn(rng, 1, 2, 6, 16), randn(rng, 1, 2, 20, 16), randn(rng, 1, 2, 20, 16)
    out = hattn.topk_attention(q, k, v, 5)
    s = np.einsum("bhid,bhjd->bhij", q.astype(np.float64), k) / 4.0
    keep = np.argsort(-s, axis=-1, kind="stable")[..., :5]
    want = np.zeros(q.shape)
    for h in range(2):
        for i in range(6):
            sel = keep[0, h, i]
            p = np.exp(s[0, h, i, sel] - s[0, h, i, sel].max())
            want[0, h, i] = p @ v[0, h, sel] / p.sum()
    close(out, want, 2e-5)


def test_attention_float32_query_over_float16_cache(rng):
    # Decode as engines keep it: float32 q and out over a float16 K/V cache, nothing rounded.
    q = randn(rng, 1, 8, 1, 64)
    k, v = (randn(rng, 1, 2, 300, 64).astype(np.float16) for _ in range(2))
    out = hattn.attention(q, k, v)
    assert out.dtype == np.float32 and "_f16kv_" in hattn.last_dispatch().kernel
    close(out, reference(q, k, v)[0], 2e-5)


def test_topk_float16_decode(rng):
    # A float16 cache: the 16-bit decode kernel, within half an f16 ulp (plus fp32 noise) of the
    # float64 top-k on the same (already rounded) values.
    q, k, v = (randn(rng, 1, 4, 2, 64).astype(np.float16), randn(rng, 1, 2, 300, 64).astype(
        np.float16), randn(rng, 1, 2, 300, 64).astype(np.float16))
    out = hattn.topk_attention(q, k, v, 16)
    assert out.dtype == np.float16
    assert "_f16_" in hattn.last_dispatch().kernel
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    kr, vr = np.repeat(k64, 2, axis=1), np.repeat(v64, 2, axis=1)  # kv head h // 2
    s = np.einsum("bhid,bhjd->bhij", q64, kr) * np.float64(np.float32(1 / 8))
    keep = np.argsort(-s, axis=-1, kind="stable")[..., :16]
    want = np.zeros(q.shape)
    for h in range(4):
        for i in range(2):
            sel = keep[0, h, i]
            p = np.exp(s[0, h, i, sel] - s[0, h, i, sel].max())
            want[0, h, i] = p @ vr[0, h, sel] / p.sum()
    got = out.astype(np.float64)
    assert np.all(np.abs(got - want) <= 2.0 ** -11 * np.abs(want) + 2e-5 * (1 + np.abs(want)))
    # Prefill (Lq > 8: each row repeated 6 times) runs the generic-D 16-bit prefill kernels.
    pre = hattn.topk_attention(np.repeat(q, 6, axis=2), k, v, 16)
    assert pre.dtype == np.float16 and "topk_prefill_" in hattn.last_dispatch().kernel
    got = pre[:, :, ::6].astype(np.float64)
    assert np.all(np.abs(got - want) <= 2.0 ** -11 * np.abs(want) + 2e-5 * (1 + np.abs(want)))


def test_topk_ffn_matches_float64(rng):
    x, w1, w2 = randn(rng, 5, 32), randn(rng, 64, 32), randn(rng, 32, 64)
    y = hattn.topk_ffn(x, w1, np.ascontiguousarray(w2.T), 8)
    h = x.astype(np.float64) @ w1.T
    keep = np.argsort(-h, axis=-1, kind="stable")[:, :8]
    mask = np.zeros_like(h)
    np.put_along_axis(mask, keep, 1.0, axis=-1)
    close(y, np.maximum(h * mask, 0) @ w2.T, 1e-3)


def test_loki_float16_decode(rng):
    # A float16 rotated cache, its leading-channel copy and values, the basis in float32; with
    # top_k = Lk the result is dense attention in the rotated frame on the rounded values.
    basis = np.stack([np.linalg.qr(rng.standard_normal((32, 32)))[0] for _ in range(2)]).astype(
        np.float32)
    q = randn(rng, 1, 4, 2, 32).astype(np.float16)
    k_rot = randn(rng, 1, 2, 40, 32).astype(np.float16)
    v = randn(rng, 1, 2, 40, 32).astype(np.float16)
    lead = np.ascontiguousarray(k_rot[..., :8])
    out = hattn.loki_attention(q, k_rot, v, basis, rank=8, top_k=40, k_lead=lead)
    assert out.dtype == np.float16 and "_f16_" in hattn.last_dispatch().kernel
    q_rot = np.einsum("bhid,hdc->bhic", q.astype(np.float64), np.repeat(basis, 2, axis=0))
    want = reference(q_rot, k_rot, v, scale=np.float64(np.float32(1 / np.sqrt(32))))[0]
    got = out.astype(np.float64)
    assert np.all(np.abs(got - want) <= 2.0 ** -11 * np.abs(want) + 2e-5 * (1 + np.abs(want)))
    with pytest.raises(hattn.InvalidArgument, match="basis is float32 in every dtype"):
        hattn.loki_attention(q, k_rot, v, basis.astype(np.float16), rank=8, top_k=40)


@pytest.mark.skipif(not hattn._hattn.has_loki_prep, reason="this build has no LAPACKE")
def test_loki_calibrate_rotate_attention(rng):
    keys = randn(rng, 2, 200, 16) * np.linspace(3, 0.2, 16).astype(np.float32)
    basis, ratio, ranks = hattn.loki_calibrate(keys)
    assert basis.shape == (2, 16, 16) and abs(ratio.sum(-1) - 1).max() < 1e-5 and len(ranks) == 2
    share = hattn.loki_captured_variance(keys, basis)
    close(share, np.cumsum(ratio, -1), 1e-4)
    q, k, v = randn(rng, 1, 4, 3, 16), randn(rng, 1, 2, 24, 16), randn(rng, 1, 2, 24, 16)
    k_rot = hattn.loki_rotate(k, basis)
    close(k_rot, np.einsum("bhld,hdc->bhlc", k.astype(np.float64), basis), 1e-4)
    # k = Lk keeps every key: exact attention for any rank.
    out = hattn.loki_attention(q, k_rot, v, basis, rank=2, top_k=24)
    close(out, reference(q, k, v)[0], 1e-4)
    assert "r=2" in hattn.last_dispatch().reason


def test_el_equals_standard_and_float64(rng):
    dm, heads = 64, 4
    w = {n: randn(rng, dm, dm) * 0.1 for n in ("wq", "wk", "wv", "wo")}
    w["bq"] = randn(rng, dm)
    x, memory = randn(rng, 2, 3, dm), randn(rng, 2, 7, dm)
    y = hattn.el_attention(x, memory, w, heads)
    y_std = hattn.mha_attention(x, memory, w, heads)
    qp = x.astype(np.float64) @ w["wq"].T + w["bq"]
    kp, vp = memory.astype(np.float64) @ w["wk"].T, memory.astype(np.float64) @ w["wv"].T
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, dm // heads).transpose(0, 2, 1, 3)
    o = reference(split(qp), split(kp), split(vp))[0].transpose(0, 2, 1, 3).reshape(2, 3, dm)
    close(y, o @ w["wo"].T, 1e-4)
    close(y_std, y, 1e-4)
    with pytest.raises(hattn.InvalidArgument, match="unknown entries"):
        hattn.el_attention(x, memory, dict(w, wx=w["wq"]), heads)


def test_el_float16_weights_and_memory(rng):
    dm, heads = 64, 4
    w = {n: (randn(rng, dm, dm) * 0.1).astype(np.float16) for n in ("wq", "wk", "wv", "wo")}
    x, memory = randn(rng, 2, 3, dm).astype(np.float16), randn(rng, 2, 7, dm).astype(np.float16)
    y = hattn.el_attention(x, memory, w, heads)
    assert y.dtype == np.float16
    w32 = {n: a.astype(np.float32) for n, a in w.items()}
    y32 = hattn.el_attention(x.astype(np.float32), memory.astype(np.float32), w32, heads)
    # the same fp32 computation on the same values, y rounded once to float16
    close(y.astype(np.float32), y32, 2e-3)
    # fp32 activations over the float16 weights and memory
    close(hattn.el_attention(x.astype(np.float32), memory, w, heads), y32, 1e-5)


def test_sparsek_mask_and_dense_limit(rng):
    z = randn(rng, 3, 40)
    p, tau = hattn.sparsek_mask(z, 5)
    close(p.sum(-1), [5, 5, 5], 1e-4)
    close(p, np.clip(z - tau[:, None], 0, 1), 1e-6)
    q, k, v = randn(rng, 1, 2, 6, 16), randn(rng, 1, 1, 10, 16), randn(rng, 1, 1, 10, 16)
    u = randn(rng, 1, 1, 10)
    # k >= Lk with no window: every older key has gate 1, so it is dense causal attention.
    out = hattn.sparsek_attention(q, k, v, u=u, budget=10)
    close(out, reference(q, k, v, causal=True)[0], 2e-5)
    with pytest.raises(hattn.InvalidArgument, match="needs the scores u"):
        hattn.sparsek_attention(q, k, v, budget=3)


def test_sparsek_decoder_steps_equal_the_whole_sequence(rng):
    L, dm = 12, 16
    q, k, v = randn(rng, 1, 2, L, 16), randn(rng, 1, 1, L, 16), randn(rng, 1, 1, L, 16)
    x, w = randn(rng, 1, L, dm), randn(rng, 1, dm)
    whole = hattn.sparsek_attention(q, k, v, x=x, w_score=w, budget=3, window=2)
    dec = hattn.SparsekDecoder(1, 2, 1, 16, w, budget=3, window=2)
    for t in range(L):
        sl = slice(t, t + 1)
        step = dec.step(np.ascontiguousarray(q[:, :, sl]), np.ascontiguousarray(k[:, :, sl]),
                        np.ascontiguousarray(v[:, :, sl]), np.ascontiguousarray(x[:, sl]))
        close(step[:, :, 0], whole[:, :, t], 2e-5)
    assert dec.position == L and dec.cached_pairs <= 5


def test_sparsek_float16_decoder_equals_prefill(rng):
    L, dm = 24, 8
    q, k, v = (randn(rng, *s).astype(np.float16) for s in ((1, 2, L, 16), (1, 1, L, 16),
                                                          (1, 1, L, 16)))
    x, w = randn(rng, 1, L, dm).astype(np.float16), randn(rng, 1, dm)
    whole = hattn.sparsek_attention(q, k, v, x=x, w_score=w, budget=3, window=2)
    assert whole.dtype == np.float16
    dec = hattn.SparsekDecoder(1, 2, 1, 16, w, budget=3, window=2, dtype="f16")
    for t in range(L):
        sl = slice(t, t + 1)
        step = dec.step(np.ascontiguousarray(q[:, :, sl]), np.ascontiguousarray(k[:, :, sl]),
                        np.ascontiguousarray(v[:, :, sl]), np.ascontiguousarray(x[:, sl]))
        assert step.dtype == np.float16
        # the same fp32 sums, each rounded once to float16: within one ulp of each other
        close(step[:, :, 0].astype(np.float32), whole[:, :, t].astype(np.float32), 4e-3)
    with pytest.raises(hattn.Error, match="cache"):
        dec.step(*(np.ascontiguousarray(a[:, :, :1]).astype(np.float32) for a in (q, k, v)),
                 np.ascontiguousarray(x[:, :1]))


# --- batches --------------------------------------------------------------------------------


def test_paged_append_and_attention(rng):
    lengths = np.array([5, 0, 11])
    page, d = 4, 16
    table = np.array([[3, 0, 0], [1, 1, 1], [2, 4, 5]], np.int64)  # int64 is converted
    k_pages = np.zeros((6, 2, page, d), np.float32)
    v_pages = np.zeros_like(k_pages)
    ks = [randn(rng, 1, 2, n, d) for n in lengths]
    vs = [randn(rng, 1, 2, n, d) for n in lengths]
    cur = np.zeros(3, np.int32)
    for t in range(int(lengths.max())):  # token by token, as a serving loop appends
        kt, vt = np.zeros((3, 2, 1, d), np.float32), np.zeros((3, 2, 1, d), np.float32)
        active = [b for b in range(3) if t < lengths[b]]
        for b in active:
            kt[b], vt[b] = ks[b][0, :, t:t + 1], vs[b][0, :, t:t + 1]
        # sequences that are done append nothing: give them a scratch length past their data
        for b in active:
            hattn.paged_append(kt[b:b + 1], vt[b:b + 1], k_pages, v_pages, table[b:b + 1],
                               cur[b:b + 1])
            cur[b] += 1
    q = randn(rng, 3, 4, 1, d)
    out = hattn.paged_attention(q, k_pages, v_pages, table, lengths)
    for b in range(3):
        if lengths[b] == 0:
            close(out[b], np.zeros((4, 1, d)), 0)
        else:
            close(out[b:b + 1], reference(q[b:b + 1], ks[b], vs[b])[0], 2e-5)
    with pytest.raises(hattn.InvalidArgument, match="sequence 2"):
        hattn.paged_attention(q, k_pages, v_pages, np.where(table == 5, 9, table), lengths)


def test_paged_topk_and_loki_equal_the_gathered_calls(rng):
    # Each sequence's pages gathered by numpy: the contiguous call on them (the same generic-D
    # kernel math) writes the same bits as the paged call.
    page, d, lengths = 4, 64, np.array([9, 3, 1])  # D = 64: a paged top-k kernel in the build
    table = np.array([[5, 0, 2], [1, 7, 7], [4, 7, 7]], np.int32)
    k_pages, v_pages = randn(rng, 8, 2, page, d), randn(rng, 8, 2, page, d)
    q = randn(rng, 3, 4, 1, d)
    basis = np.tile(np.eye(d, dtype=np.float32), (2, 1, 1))[:, :, ::-1].copy()  # a permutation
    topk = hattn.paged_topk_attention(q, k_pages, v_pages, table, lengths, 4)
    assert "topk_paged_decode_" in hattn.last_dispatch().kernel
    loki = hattn.paged_loki_attention(q, k_pages, v_pages, table, lengths, basis, rank=5, top_k=4)
    assert "gathered" in hattn.last_dispatch().reason  # no paged Loki kernel at D = 64
    for b in range(3):
        n = int(lengths[b])
        rows = [table[b, t // page] for t in range(n)]
        kk = np.stack([k_pages[rows[t], :, t % page] for t in range(n)], axis=1)[None]
        vv = np.stack([v_pages[rows[t], :, t % page] for t in range(n)], axis=1)[None]
        assert np.array_equal(topk[b:b + 1], hattn.topk_attention(q[b:b + 1], kk, vv, 4))
        want = hattn.loki_attention(q[b:b + 1], kk, vv, basis, rank=5, top_k=4)
        assert np.array_equal(loki[b:b + 1], want)
    # Lq > decode_threshold(): each sequence's pages gathered, then the contiguous call.
    q9 = randn(rng, 3, 4, 9, d)
    pre = hattn.paged_topk_attention(q9, k_pages, v_pages, table, lengths, 4, causal=True)
    assert "gathered" in hattn.last_dispatch().reason
    for b in range(3):
        n = int(lengths[b])
        rows = [table[b, t // page] for t in range(n)]
        kk = np.stack([k_pages[rows[t], :, t % page] for t in range(n)], axis=1)[None]
        vv = np.stack([v_pages[rows[t], :, t % page] for t in range(n)], axis=1)[None]
        want = hattn.topk_attention(q9[b:b + 1], kk, vv, 4, causal=True)
        assert np.array_equal(pre[b:b + 1], want)


def test_ragged_matches_per_sequence(rng):
    qo, ko = np.array([0, 3, 4, 9]), np.array([0, 5, 5, 17])
    q, k, v = randn(rng, 9, 4, 16), randn(rng, 17, 2, 16), randn(rng, 17, 2, 16)
    out = hattn.ragged_attention(q, k, v, qo, ko, causal=True)
    for b in range(3):
        qs = q[qo[b]:qo[b + 1]].transpose(1, 0, 2)[None]
        kk = k[ko[b]:ko[b + 1]].transpose(1, 0, 2)[None]
        vv = v[ko[b]:ko[b + 1]].transpose(1, 0, 2)[None]
        if qs.shape[2] == 0:
            continue
        want = reference(qs, kk, vv, causal=True)[0][0].transpose(1, 0, 2)
        close(out[qo[b]:qo[b + 1]], want, 2e-5)
    with pytest.raises(hattn.InvalidArgument):
        hattn.ragged_attention(q, k, v, qo, ko[::-1].copy())


def test_library_info():
    kernels = hattn.list_kernels()
    assert any(k["variant"] == "dense" and k["selected_build"] for k in kernels)
    assert hattn.version().count(".") == 2
    assert hattn.decode_threshold() >= 1
    ok, reason = hattn.cuda_available()
    assert ok or reason


def test_limit_isa():
    level = "neon" if platform.machine() == "aarch64" else "sse41"
    before = hattn.isa_limit()
    last = hattn.last_dispatch()
    hattn.limit_isa(level)
    try:
        assert hattn.isa_limit() == level
        cpu = [k for k in hattn.list_kernels() if k["family"] != "cuda"]
        above = "arm_fp16" if level == "neon" else "avx"
        assert all(above not in k["selected_build"] for k in cpu)
        with pytest.raises(hattn.InvalidArgument, match="unknown ISA level 'avx3'"):
            hattn.limit_isa("avx3")
        assert hattn.isa_limit() == level
        assert hattn.last_dispatch() == last  # no kernel ran
    finally:
        hattn.limit_isa(before)


# --- PyTorch ----------------------------------------------------------------------------------


def test_torch_tensors_and_sdpa(rng):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (only .venv-peer has it)")
    import hattn.torch as ht

    q, k, v = (torch.from_numpy(randn(rng, 2, 4, 9, 32)) for _ in range(3))
    with torch.no_grad():
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        got = ht.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    close(got.numpy(), want.numpy(), 2e-5)
    qb, kb, vb = (t.to(torch.bfloat16) for t in (q, k, v))
    got16 = ht.scaled_dot_product_attention(qb, kb, vb)
    assert got16.dtype == torch.bfloat16
    close(got16.float().numpy(), reference(qb.float(), kb.float(), vb.float())[0], 2e-2)
    kg = k[:, :2].contiguous()
    with pytest.raises(hattn.InvalidArgument, match="enable_gqa"):
        ht.scaled_dot_product_attention(q, kg, kg)
    close(ht.scaled_dot_product_attention(q, kg, kg, enable_gqa=True).numpy(),
          reference(q, kg, kg)[0], 2e-5)
    for kwargs, phrase in ((dict(attn_mask=torch.ones(9, 9, dtype=torch.bool)), "attn_mask"),
                           (dict(dropout_p=0.1), "dropout")):
        with pytest.raises(hattn.Unsupported, match=phrase):
            ht.scaled_dot_product_attention(q, k, v, **kwargs)
    with pytest.raises(hattn.Unsupported, match="forward-only"):
        ht.scaled_dot_product_attention(q.requires_grad_(), k, v)


def test_torch_use_routes_sdpa(rng):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (only .venv-peer has it)")
    import hattn.torch as ht
    F = torch.nn.functional

    q, k, v = (torch.from_numpy(randn(rng, 1, 2, 16, 16)) for _ in range(3))
    with torch.no_grad():
        want = F.scaled_dot_product_attention(q, k, v)
        with ht.use("topk", top_k=16) as router:
            got = F.scaled_dot_product_attention(q, k, v)
        assert router.calls == 1 and F.scaled_dot_product_attention is ht._sdpa
    close(got.numpy(), want.numpy(), 2e-5)


def test_torch_16bit_batches_and_loki_routing(rng):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (only .venv-peer has it)")
    import hattn.torch as ht

    # Packed sequences in bfloat16 (PyTorch tensors carry the dtype NumPy lacks).
    qo, ko = np.array([0, 2, 5]), np.array([0, 6, 13])
    q, k, v = randn(rng, 5, 4, 32), randn(rng, 13, 2, 32), randn(rng, 13, 2, 32)
    qb, kb, vb = (torch.from_numpy(x).to(torch.bfloat16) for x in (q, k, v))
    out = hattn.ragged_attention(qb, kb, vb, qo, ko)
    assert out.dtype == torch.bfloat16
    for b in range(2):
        as_bhld = lambda t, o: t[o[b]:o[b + 1]].float().numpy().transpose(1, 0, 2)[None]
        want = reference(as_bhld(qb, qo), as_bhld(kb, ko), as_bhld(vb, ko))[0][0].transpose(1, 0, 2)
        close(out[qo[b]:qo[b + 1]].float().numpy(), want, 2e-2)
    if not hattn._hattn.has_loki_prep:
        pytest.skip("this build has no LAPACKE: Loki routing needs loki_rotate")
    # use("loki") with every key kept (top_fraction=1) is exact attention for any rank.
    keys = torch.from_numpy(randn(rng, 2, 64, 16))
    basis, _, _ = hattn.loki_calibrate(keys)
    q4, k4, v4 = (torch.from_numpy(randn(rng, 1, 2, 8, 16)) for _ in range(3))
    with torch.no_grad():
        want = torch.nn.functional.scaled_dot_product_attention(q4, k4, v4)
        with ht.use("loki", bases=[basis], rank=2, top_fraction=1.0) as router:
            got = torch.nn.functional.scaled_dot_product_attention(q4, k4, v4)
    assert router.calls == 1
    close(got.numpy(), want.numpy(), 2e-5)
    with pytest.raises(hattn.InvalidArgument, match="bases="):
        with ht.use("loki"):
            pass
