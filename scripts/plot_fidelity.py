#!/usr/bin/env python3
"""Plots the JSON report of `hattn fidelity activations` as one PNG.

    .venv/bin/python scripts/plot_fidelity.py fidelity.json fidelity.png

Panels, one line per layer: the worst head's relative output error against the bytes a decode step
reads (as a fraction of dense attention's), for each variant in the report; the mean softmax mass
the selection keeps; and, where Loki was measured, the share of the evaluated keys' variance held by
the basis's leading r axes (mean over kv heads; dashed: on the calibration keys). The dotted line is
the report's error target.
"""
import argparse
import json
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="JSON written by hattn fidelity activations --json")
    ap.add_argument("png", help="PNG to write")
    args = ap.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_fidelity.py: matplotlib is missing (scripts/setup.sh installs it into .venv)",
              file=sys.stderr)
        return 1
    try:
        with open(args.report) as f:
            report = json.load(f)
        layers = report["layers"]
    except (OSError, ValueError, KeyError) as e:
        print(f"plot_fidelity.py: {args.report}: not a fidelity report ({e})", file=sys.stderr)
        return 1

    variants = []
    for layer in layers:
        for r in layer["results"]:
            if r["variant"] not in variants:
                variants.append(r["variant"])
    has_loki = any("loki_variance" in layer for layer in layers)
    cols = len(variants) + (1 if has_loki else 0)
    fig, axes = plt.subplots(2, max(cols, 1), figsize=(4.2 * max(cols, 1), 7.5), squeeze=False)
    cmap = plt.get_cmap("viridis")
    colour = lambda i: cmap(i / max(len(layers) - 1, 1))
    target = report["targets"]["max_error"]
    for c, variant in enumerate(variants):
        err_ax, mass_ax = axes[0][c], axes[1][c]
        for i, layer in enumerate(layers):
            rs = [r for r in layer["results"] if r["variant"] == variant]
            # Loki: one line per d_f (k_f along it), told apart by line style.
            groups = sorted({r["knob"].get("d_f") for r in rs}, key=lambda g: (g is None, g))
            for n, g in enumerate(groups):
                line = sorted((r for r in rs if r["knob"].get("d_f") == g),
                              key=lambda r: r["bytes"])
                x = [r["bytes"] for r in line]
                style = ["-", "--", ":", "-."][n % 4]
                # Colour says the layer (legend of the first panel); the line style says d_f.
                label = (f"layer {layer['layer']}" if g is None
                         else f"d_f={g:g}" if i == 0 else None)
                err_ax.plot(x, [max(r["summary"]["worst_head_error"], 1e-9) for r in line],
                            "o" + style, color=colour(i), label=label, markersize=3)
                mass_ax.plot(x, [r["summary"]["mean_mass"] for r in line], "o" + style,
                             color=colour(i), markersize=3)
        err_ax.axhline(target, color="grey", linestyle=":", label=f"target {target:g}")
        err_ax.set_yscale("log")
        err_ax.set_title(f"{variant}: worst head's output error")
        mass_ax.set_title(f"{variant}: softmax mass kept (mean row)")
        mass_ax.set_ylim(0, 1.02)
        for ax in (err_ax, mass_ax):
            ax.set_xlabel("bytes read / dense")
            ax.grid(alpha=0.3)
        if c == 0 or variant == "loki":
            err_ax.legend(fontsize=6)
    if has_loki:
        ax = axes[0][cols - 1]
        for i, layer in enumerate(layers):
            heads = layer.get("loki_variance")
            if not heads:
                continue
            d = len(heads[0]["evaluated"])
            r = [(j + 1) / d for j in range(d)]
            mean = [sum(h["evaluated"][j] for h in heads) / len(heads) for j in range(d)]
            ax.plot(r, mean, "-", color=colour(i), label=f"layer {layer['layer']}")
            if "calibration" in heads[0]:
                cal = [sum(h["calibration"][j] for h in heads) / len(heads) for j in range(d)]
                ax.plot(r, cal, "--", color=colour(i), linewidth=0.8)
        ax.set_title("Loki basis: key variance in leading r axes")
        ax.set_xlabel("r / D")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        axes[1][cols - 1].axis("off")
    fig.suptitle(f"hattn fidelity: {', '.join(report['inputs']['q'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
