#!/usr/bin/env python3
"""The benchmark run as a PNG next to report.py's table (scripts/bench.sh writes both).

    .venv/bin/python bench/plot.py results/bench_dense.png results/bench_dense.json [torch_sdpa.json]

Left: dense prefill GFLOP/s of visible work by sequence length, hattn next to PyTorch SDPA in each
dtype measured (solid: full, dashed: causal; one colour per implementation and dtype, one marker per
head dim), with the machine's fp32 FMA peak measured in the same run. Right: decode GB/s by key
count (H = 32, D = 128), hattn and PyTorch per dtype, with the array-read bandwidth. Medians, as in
the table.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import load, val  # noqa: E402  (the table's reader: one parse of the JSON)

SERIES = [("hattn_dense", "hattn f32", "C0"), ("torch_sdpa", "torch f32", "C1"),
          ("hattn_dense_bf16", "hattn bf16", "C2"), ("torch_sdpa_bf16", "torch bf16", "C3"),
          ("hattn_dense_f16", "hattn f16", "C4"), ("torch_sdpa_f16", "torch f16", "C5")]


def points(rows, prefix, pattern, key):
    """(x, y) for every row `prefix/...` whose rest matches `pattern` (group 1 is x)."""
    out = []
    for name in rows:
        head, _, rest = name.partition("/")
        m = re.fullmatch(pattern, rest)
        if head == prefix and m:
            y = val(rows, name, key)
            if y is not None:
                out.append((int(m.group(1)), y))
    return sorted(out)


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib is missing (scripts/setup.sh installs it into .venv); no plot",
              file=sys.stderr)
        return 1
    png, rows = sys.argv[1], load(sys.argv[2:])
    if not rows:
        print("plot.py: no benchmark rows read", file=sys.stderr)
        return 1
    fig, (pre, dec) = plt.subplots(1, 2, figsize=(13, 5))
    drawn = 0
    for prefix, label, colour in SERIES:
        for d, marker in ((64, "o"), (128, "s")):
            for causal, style in ((0, "-"), (1, "--")):
                pts = points(rows, prefix, rf"prefill/L:(\d+)/D:{d}/causal:{causal}", "GFLOP/s")
                if pts:
                    pre.plot([p[0] for p in pts], [p[1] for p in pts], marker + style,
                             color=colour, markersize=4,
                             label=f"{label} D={d}{' causal' if causal else ''}")
                    drawn += 1
        pts = points(rows, prefix, r"decode/Lk:(\d+)/D:128", "GB/s")
        if pts:
            dec.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colour, label=label)
            drawn += 1
    peak = val(rows, "machine_peak/fma/threads:2", "GFLOP/s")
    if peak:
        pre.axhline(peak, color="grey", linestyle=":", label=f"fp32 FMA peak {peak:.0f}")
    bw = val(rows, "array_read/threads:2", "GB/s")
    if bw:
        dec.axhline(bw, color="grey", linestyle=":", label=f"array read {bw:.1f} GB/s")
    for ax, title, xlabel, ylabel in (
            (pre, "dense prefill, B=1, H=8", "L", "GFLOP/s (visible work)"),
            (dec, "dense decode, B=1, H=32, D=128, Lq=1", "Lk", "GB/s of q, k, v, out")):
        ax.set_xscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    if not drawn:
        print("plot.py: no dense prefill or decode rows in the run; no plot", file=sys.stderr)
        return 1
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
