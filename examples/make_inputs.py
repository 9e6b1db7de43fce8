"""Writes random float32 q, k, v arrays ([B, H, L, D], C order) for the hattn CLI demo."""
import argparse
import pathlib

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--q-heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--lq", type=int, default=512)
    p.add_argument("--lk", type=int, default=512)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    out = pathlib.Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shapes = {"q": (a.batch, a.q_heads, a.lq, a.head_dim),
              "k": (a.batch, a.kv_heads, a.lk, a.head_dim),
              "v": (a.batch, a.kv_heads, a.lk, a.head_dim)}
    for name, shape in shapes.items():
        np.save(out / f"{name}.npy", rng.standard_normal(shape, dtype=np.float32))
    print(f"wrote q{shapes['q']} k{shapes['k']} v{shapes['v']} to {out} (seed {a.seed})")


if __name__ == "__main__":
    main()
