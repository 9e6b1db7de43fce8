"""Checks the CLI's output against a float64 NumPy softmax attention (GQA, optional causal)."""
import argparse
import pathlib
import sys

import numpy as np


def reference(q, k, v, causal):
    group = q.shape[1] // k.shape[1]
    k = np.repeat(k.astype(np.float64), group, axis=1)
    v = np.repeat(v.astype(np.float64), group, axis=1)
    s = np.einsum("bhid,bhjd->bhij", q.astype(np.float64), k) / np.sqrt(q.shape[-1])
    if causal:
        lq, lk = s.shape[-2:]
        visible = np.arange(lk)[None, :] <= np.arange(lq)[:, None] + (lk - lq)
        s = np.where(visible, s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return np.einsum("bhij,bhjd->bhid", p / p.sum(axis=-1, keepdims=True), v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--causal", action="store_true")
    a = p.parse_args()
    d = pathlib.Path(a.dir)
    q, k, v = (np.load(d / f"{n}.npy") for n in "qkv")
    got = np.load(a.out)
    ref = reference(q, k, v, a.causal)
    err = np.max(np.abs(got - ref) / (1e-5 + np.abs(ref)).clip(min=1e-2))
    print(f"{a.out}: max relative error vs float64 NumPy = {err:.2e}")
    sys.exit(0 if err < 1e-3 else 1)


if __name__ == "__main__":
    main()
