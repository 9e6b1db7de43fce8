"""hattn's 16-bit error next to PyTorch's in the same dtype, on the same inputs: dense attention
(PyTorch SDPA), top-k decode and the top-k FFN (the same operations written with PyTorch ops in
the dtype: scores, torch.topk, softmax, the gathered sum) and multi-head attention over a shared
memory (hattn's EL and standard paths; F.multi_head_attention_forward).

Both libraries get the same random inputs rounded to bf16 (or f16); the reference is float64 on
those rounded values, so what is measured is each library's own arithmetic (its accumulation, its
rounding of intermediates such as scores, probabilities and projections, and the final rounding of
the output). hattn runs through its CLI (`hattn run ... --dtype`), PyTorch in-process.

    .venv-peer/bin/python bench/sixteen_bit_error.py [--hattn build/tools/hattn] [--out F.json]

Run with the interpreter in .venv-peer (scripts/setup.sh --peer). Prints one line per shape and
dtype: the relative RMS error ||out - ref|| / ||ref|| and the largest absolute error of each.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("sixteen_bit_error.py: needs numpy and torch (run scripts/setup.sh --peer)")

SEED = 20261206
TYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


def reference(q, k, v, causal):
    """float64 attention, bottom-right causal alignment, q [B,Hq,Lq,D], k/v [B,Hkv,Lk,D]."""
    group = q.shape[1] // k.shape[1]
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    s = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(q.shape[-1])
    if causal:
        lq, lk = q.shape[2], k.shape[2]
        mask = np.arange(lk)[None, :] > np.arange(lq)[:, None] + (lk - lq)
        s = np.where(mask, -np.inf, s)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return np.einsum("bhij,bhjd->bhid", p / p.sum(axis=-1, keepdims=True), v)


def topk_reference(q, k, v, top):
    """float64 top-k attention (decode, non-causal): each row's `top` largest scores."""
    group = q.shape[1] // k.shape[1]
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    s = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(q.shape[-1])
    keep = np.argsort(-s, axis=-1, kind="stable")[..., :top]
    sel = np.take_along_axis(s, keep, axis=-1)
    p = np.exp(sel - sel.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    vk = np.take_along_axis(v[:, :, None], keep[..., None], axis=3)  # [B, H, Lq, top, D]
    return np.einsum("bhit,bhitd->bhid", p, vk)


def torch_topk(q, k, v, top):
    """The same in the tensors' dtype with PyTorch ops (scores rounded, softmax as torch does)."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s = (q @ k.transpose(-1, -2)) * (1.0 / q.shape[-1] ** 0.5)
    sel, idx = torch.topk(s, top, dim=-1)
    p = torch.softmax(sel, dim=-1)
    vk = torch.gather(v[:, :, None].expand(-1, -1, q.shape[2], -1, -1), 3,
                      idx[..., None].expand(-1, -1, -1, -1, v.shape[-1]))
    return (p[..., None] * vk).sum(dim=3)


def ffn_reference(x, w1, w2t, top):
    """float64 top-k FFN: y = sum over each token's `top` largest h = x w1^T of relu(h) w2t."""
    h = x @ w1.T
    keep = np.argsort(-h, axis=-1, kind="stable")[:, :top]
    hk = np.maximum(np.take_along_axis(h, keep, axis=-1), 0)
    return np.einsum("tk,tkd->td", hk, w2t[keep])


def torch_ffn(x, w1, w2t, top):
    h, idx = torch.topk(x @ w1.T, top, dim=-1)
    return (torch.relu(h)[..., None] * w2t[idx]).sum(dim=1)


def mha_reference(x, mem, w, heads):
    """float64 multi-head attention of x [R, T, Dm] over mem [R, N, Dm] (beam 1, no mask)."""
    dm = x.shape[-1]
    dh = dm // heads
    q = (x @ w["wq"].T + w["bq"]) / np.sqrt(dh)
    k = mem @ w["wk"].T + w["bk"]
    v = mem @ w["wv"].T + w["bv"]
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, dh).transpose(0, 2, 1, 3)
    s = np.einsum("bhid,bhjd->bhij", split(q), split(k))
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    o = np.einsum("bhij,bhjd->bhid", p / p.sum(axis=-1, keepdims=True), split(v))
    return o.transpose(0, 2, 1, 3).reshape(x.shape) @ w["wo"].T + w["bo"]


def torch_mha(x, mem, w, heads):
    """F.multi_head_attention_forward in the tensors' dtype (sequence-first layout)."""
    out, _ = F.multi_head_attention_forward(
        x.transpose(0, 1), mem.transpose(0, 1), mem.transpose(0, 1), x.shape[-1], heads,
        None, torch.cat([w["bq"], w["bk"], w["bv"]]), None, None, False, 0.0, w["wo"], w["bo"],
        training=False, need_weights=False, use_separate_proj_weight=True, q_proj_weight=w["wq"],
        k_proj_weight=w["wk"], v_proj_weight=w["wv"])
    return out.transpose(0, 1)


def run_hattn(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"sixteen_bit_error.py: {' '.join(cmd)} failed:\n{r.stderr}")
    return r.stdout.strip()


def errors(got, ref):
    diff = got.astype(np.float64) - ref
    return float(np.linalg.norm(diff) / np.linalg.norm(ref)), float(np.abs(diff).max())


def report(rows, name, dt, h, t, output):
    print(f"  {name:<26} {dt:<5} hattn {h[0]:.2e} {h[1]:.2e}   torch {t[0]:.2e} {t[1]:.2e}   "
          f"hattn/torch {h[0] / t[0]:.2f}")
    rows.append({"shape": name, "dtype": dt, "hattn_rel_rms": h[0], "hattn_max_abs": h[1],
                 "torch_rel_rms": t[0], "torch_max_abs": t[1], "hattn_output": output})


def more_variants(hattn, rng, tmp, rows):
    """top-k decode (GQA, Lk = 4096, k = 64), the top-k FFN (T = 64, D = 256, d_ff = 1024,
    k = 128) and EL / standard MHA (4 rows x 1 token over a 256-row memory, Dm = 256, H = 4)."""
    path = lambda n: os.path.join(tmp, n + ".npy")
    q = rng.standard_normal((1, 8, 1, 128)).astype(np.float32)
    k = rng.standard_normal((1, 2, 4096, 128)).astype(np.float32)
    v = rng.standard_normal((1, 2, 4096, 128)).astype(np.float32)
    x = rng.standard_normal((64, 256)).astype(np.float32)
    w1 = (rng.standard_normal((1024, 256)) / 16).astype(np.float32)
    w2 = (rng.standard_normal((256, 1024)) / 32).astype(np.float32)  # [D, d_ff] as a Linear
    xe = rng.standard_normal((4, 1, 256)).astype(np.float32)
    mem = rng.standard_normal((4, 256, 256)).astype(np.float32)
    we = {n: (rng.standard_normal((256, 256)) / 16).astype(np.float32)
          for n in ("wq", "wk", "wv", "wo")}
    we.update({n: (rng.standard_normal(256) / 4).astype(np.float32)
               for n in ("bq", "bk", "bv", "bo")})
    wdir = os.path.join(tmp, "el_weights")
    os.makedirs(wdir, exist_ok=True)
    for n, a in we.items():
        np.save(os.path.join(wdir, n + ".npy"), a)
    for n, a in (("tq", q), ("tk", k), ("tv", v), ("fx", x), ("fw1", w1), ("fw2", w2),
                 ("ex", xe), ("em", mem)):
        np.save(path(n), a)
    for dt, tt in TYPES.items():
        r16 = lambda a: torch.from_numpy(a).to(tt)
        f64 = lambda t: t.double().numpy()
        # top-k decode
        tq, tk, tv = r16(q), r16(k), r16(v)
        ref = topk_reference(f64(tq), f64(tk), f64(tv), 64)
        t = errors(torch_topk(tq, tk, tv, 64).float().numpy(), ref)
        out = run_hattn([hattn, "run", "topk", "--q", path("tq"), "--k", path("tk"), "--v",
                         path("tv"), "--topk", "64", "--dtype", dt, "--out", path("o")])
        report(rows, "topk_decode_Lk4096_k64_gqa", dt, errors(np.load(path("o")), ref), t, out)
        # the top-k FFN (hattn's CLI reads W2 as [D, d_ff] and transposes it)
        fx, fw1, fw2 = r16(x), r16(w1), r16(w2)
        ref = ffn_reference(f64(fx), f64(fw1), f64(fw2).T, 128)
        t = errors(torch_ffn(fx, fw1, fw2.T.contiguous(), 128).float().numpy(), ref)
        out = run_hattn([hattn, "run", "topk-ffn", "--x", path("fx"), "--w1", path("fw1"),
                         "--w2", path("fw2"), "--topk", "128", "--dtype", dt, "--out", path("o")])
        report(rows, "topk_ffn_T64_D256_k128", dt, errors(np.load(path("o")), ref), t, out)
        # multi-head attention over a shared memory: EL and hattn's standard path
        ex, em = r16(xe), r16(mem)
        ew = {n: r16(a) for n, a in we.items()}
        ref = mha_reference(f64(ex), f64(em), {n: f64(a) for n, a in ew.items()}, 4)
        t = errors(torch_mha(ex, em, ew, 4).float().numpy(), ref)
        for standard in (False, True):
            cmd = [hattn, "run", "el", "--x", path("ex"), "--memory", path("em"), "--weights",
                   wdir, "--heads", "4", "--dtype", dt, "--out", path("o")]
            out = run_hattn(cmd + (["--standard"] if standard else []))
            name = "mha_standard_N256_Dm256" if standard else "el_N256_Dm256"
            report(rows, name, dt, errors(np.load(path("o")), ref), t, out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p.add_argument("--hattn", default=os.path.join(here, "build", "tools", "hattn"))
    p.add_argument("--out", default=os.path.join(here, "results", "sixteen_bit_error.json"))
    a = p.parse_args()
    if not os.access(a.hattn, os.X_OK):
        sys.exit(f"sixteen_bit_error.py: no hattn CLI at {a.hattn} (build first, or pass --hattn)")
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}; error vs float64 on the same rounded inputs: rel RMS, max abs")
    # (name, B, Hq, Hkv, Lq, Lk, D, causal): prefill, causal prefill, GQA decode.
    shapes = [("prefill_L512_D64", 1, 4, 4, 512, 512, 64, False),
              ("prefill_L512_D128_causal", 1, 4, 4, 512, 512, 128, True),
              ("decode_Lk4096_D128_gqa", 1, 8, 2, 1, 4096, 128, False)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, b, hq, hkv, lq, lk, d, causal in shapes:
            q = rng.standard_normal((b, hq, lq, d)).astype(np.float32)
            k = rng.standard_normal((b, hkv, lk, d)).astype(np.float32)
            v = rng.standard_normal((b, hkv, lk, d)).astype(np.float32)
            paths = {n: os.path.join(tmp, n + ".npy") for n in ("q", "k", "v", "o")}
            for n, x in (("q", q), ("k", k), ("v", v)):
                np.save(paths[n], x)
            for dt, tt in TYPES.items():
                rounded = [torch.from_numpy(x).to(tt) for x in (q, k, v)]
                ref = reference(*(x.double().numpy() for x in rounded), causal)
                out_t = F.scaled_dot_product_attention(*rounded, is_causal=causal,
                                                       enable_gqa=hq != hkv)
                t_rel, t_max = errors(out_t.float().numpy(), ref)
                cmd = [a.hattn, "run", "dense", "--q", paths["q"], "--k", paths["k"], "--v",
                       paths["v"], "--out", paths["o"], "--dtype", dt]
                if causal:
                    cmd.append("--causal")
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit(f"sixteen_bit_error.py: {' '.join(cmd)} failed:\n{r.stderr}")
                h_rel, h_max = errors(np.load(paths["o"]), ref)
                report(rows, name, dt, (h_rel, h_max), (t_rel, t_max), r.stdout.strip())
        more_variants(a.hattn, rng, tmp, rows)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"seed": SEED, "torch": torch.__version__, "rows": rows}, f, indent=1)
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
