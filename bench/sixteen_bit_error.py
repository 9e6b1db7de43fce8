"""hattn's 16-bit dense attention error next to PyTorch SDPA's in the same dtype, on the same inputs.

Both libraries get the same random q, k, v rounded to bf16 (or f16); the reference is float64
attention on those rounded values, so what is measured is each library's own arithmetic (its
accumulation, its rounding of intermediates such as the probabilities, and the final rounding of
out). hattn runs through its CLI (`hattn run dense --dtype`), PyTorch in-process.

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


def errors(got, ref):
    diff = got.astype(np.float64) - ref
    return float(np.linalg.norm(diff) / np.linalg.norm(ref)), float(np.abs(diff).max())


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
                print(f"  {name:<26} {dt:<5} hattn {h_rel:.2e} {h_max:.2e}   "
                      f"torch {t_rel:.2e} {t_max:.2e}   hattn/torch {h_rel / t_rel:.2f}")
                rows.append({"shape": name, "dtype": dt, "hattn_rel_rms": h_rel,
                             "hattn_max_abs": h_max, "torch_rel_rms": t_rel,
                             "torch_max_abs": t_max, "hattn_output": r.stdout.strip()})
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"seed": SEED, "torch": torch.__version__, "rows": rows}, f, indent=1)
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
