#!/usr/bin/env python3
"""`hattn fidelity activations` and `hattn calibrate loki --report` against NumPy float64.

    test_fidelity.py HATTN_CLI WORKDIR [LAUNCHER ...]

Every number the two commands report is recomputed here, independently, in float64 from the same
files: the dense and variant outputs (top-k, Loki over a given basis, SPARSEK with its gates), the
selections and their recall and softmax mass, the Loki basis's variance shares, the calibration's
held-out shares and warnings, and the recommended knob. Inputs are built so that some answers are
known in closed form: keys that are orthonormal, so each score is exactly the value put in the query
(known top-k mass), and keys with a known spectrum (known variance shares). Random draws use a
printed seed (HATTN_SEED overrides). Exit status 0 when every check passes, 1 otherwise.
"""
import json
import os
import subprocess
import sys

import numpy as np

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)


def close(got, want, atol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    ok = got.shape == want.shape and bool(np.all(np.abs(got - want) <= atol))
    worst = float(np.max(np.abs(got - want))) if got.shape == want.shape and got.size else None
    check(ok, f"{what}: |got - want| max {worst} > {atol} (got {got.ravel()[:6]}, want "
              f"{want.ravel()[:6]})")


class Cli:
    def __init__(self, exe, launcher, work):
        self.cmd = launcher + [exe]
        self.work = work

    def run(self, *args, status=0):
        p = subprocess.run(self.cmd + list(args), capture_output=True, text=True, cwd=self.work)
        if p.returncode != status:
            FAILURES.append(f"hattn {' '.join(args)}: exit {p.returncode}, want {status}")
            print(p.stdout, p.stderr)
        return p

    def path(self, name):
        return os.path.join(self.work, name)


# --- float64 references ------------------------------------------------------------------------


def softmax(s):
    e = np.exp(s - s.max())
    return e / e.sum()


def top(scores, k):
    """Indices of the k highest scores, ties to the lower index (hattn's rule)."""
    return np.argsort(-scores, kind="stable")[: min(k, len(scores))]


def sparsek_mask(z, k):
    """SparseK: p = clip(z - tau, 0, 1) with sum p = k (float64 bisection)."""
    if k <= 0:
        return np.zeros_like(z)
    if k >= len(z):
        return np.ones_like(z)
    lo, hi = z.min() - 1.0, z.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.clip(z - mid, 0, 1).sum() > k:
            lo = mid
        else:
            hi = mid
    return np.clip(z - 0.5 * (lo + hi), 0, 1)


def row_output(s, v, sel, gates=None):
    p = softmax(s[sel])
    g = np.ones(len(sel)) if gates is None else gates
    return (p * g) @ v[sel]


def reference_layer(q, k, v, u, basis, causal, scale, knobs, window):
    """Per knob: per q head [rel error, worst row, recall, mass, min mass] over every row."""
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    group = Hq // Hkv
    dense = np.zeros_like(q)
    rows = {}  # (b, h, i) -> (scores, p, order)
    for b in range(B):
        for h in range(Hq):
            g = h // group
            for i in range(Lq):
                vis = min(Lk, i + Lk - Lq + 1) if causal else Lk
                s = scale * (k[b, g, :vis] @ q[b, h, i])
                p = softmax(s)
                dense[b, h, i] = p @ v[b, g, :vis]
                rows[b, h, i] = (s, p, np.argsort(-s, kind="stable"), vis)
    out = {}
    for name, knob in knobs:
        o = np.zeros_like(q)
        recall = np.zeros((B, Hq, Lq))
        mass = np.zeros((B, Hq, Lq))
        for (b, h, i), (s, p, order, vis) in rows.items():
            g = h // group
            gates = None
            if name == "topk":
                sel = top(s, knob["k"])
            elif name == "loki":
                r = max(1, round(knob["d_f"] * D))
                kk = max(1, round(knob["k_f"] * Lk))
                qh = q[b, h, i] @ basis[g]
                krot = k[b, g, :vis] @ basis[g]
                sel = top(krot[:, :r] @ qh[:r], kk)
            else:  # sparsek, value gates
                pos = i + Lk - Lq
                cand = pos - window + 1
                sel_old, gates_old = np.array([], int), np.array([])
                if cand > 0 and knob["k"] > 0:
                    m = sparsek_mask(u[b, g, :cand], knob["k"])
                    nz = np.nonzero(m > 0)[0]
                    keep = nz[top(u[b, g, nz], knob["k"])]
                    sel_old, gates_old = keep, m[keep]
                win = np.arange(max(0, pos - window + 1), pos + 1)
                sel = np.concatenate([sel_old, win]).astype(int)
                gates = np.concatenate([gates_old, np.ones(len(win))])
            o[b, h, i] = row_output(s, v[b, g, :vis], sel, gates)
            rank = np.empty(vis, int)
            rank[order] = np.arange(vis)
            recall[b, h, i] = np.mean(rank[sel] < len(sel)) if len(sel) else 0.0
            mass[b, h, i] = p[sel].sum()
        heads = []
        for h in range(Hq):
            diff = o[:, h] - dense[:, h]
            rel = np.sqrt((diff**2).sum() / (dense[:, h] ** 2).sum())
            row_err = np.sqrt((diff**2).sum(-1) / (dense[:, h] ** 2).sum(-1))
            heads.append((rel, row_err.max(), recall[:, h], mass[:, h]))
        out[(name, json.dumps(knob, sort_keys=True))] = heads
    return out


# --- the checks --------------------------------------------------------------------------------


def known_mass(cli, rng):
    """Orthonormal keys: q = sum_j a_j k_j gives scores a_j exactly (scale 1)."""
    B, H, L, D = 1, 2, 32, 32
    k = np.empty((B, H, L, D))
    for h in range(H):
        k[0, h] = np.linalg.qr(rng.standard_normal((D, D)))[0].T  # rows orthonormal
    a = rng.uniform(-0.5, 0.5, size=(B, H, L, L))
    hot = np.argsort(rng.random((B, H, L, L)), axis=-1)[..., :4]  # 4 keys per row score 5
    np.put_along_axis(a, hot, 5.0, axis=-1)
    q = np.einsum("bhij,bhjd->bhid", a, k)
    v = rng.standard_normal((B, H, L, D))
    for name, x in (("q", q), ("k", k), ("v", v)):
        np.save(cli.path(f"m_{name}.npy"), x.astype(np.float32))
    p = cli.run("fidelity", "activations", "--q", cli.path("m_q.npy"), "--k", cli.path("m_k.npy"),
                "--v", cli.path("m_v.npy"), "--variants", "topk", "--topk", "4,8", "--scale", "1",
                "--rows", str(L), "--json", cli.path("m.json"))
    if p.returncode:
        return
    rep = json.load(open(cli.path("m.json")))
    res = {r["knob"]["k"]: r for r in rep["layers"][0]["results"]}
    e = np.exp(a)
    want4 = (np.take_along_axis(e, hot, -1).sum(-1) / e.sum(-1))  # [B, H, L]
    for h in range(H):
        close(res[4]["heads"][h]["mass"], want4[0, h].mean(), 2e-5, f"known mass k=4 head {h}")
        close(res[4]["heads"][h]["min_mass"], want4[0, h].min(), 2e-5, f"known min mass head {h}")
        close(res[4]["heads"][h]["recall"], 1.0, 0, f"topk recall head {h}")
    # k=8 adds the 4 largest of the small scores.
    srt = np.sort(a, axis=-1)[..., ::-1]
    want8 = np.exp(srt[..., :8]).sum(-1) / e.sum(-1)
    close([res[8]["heads"][h]["mass"] for h in range(H)], want8[0].mean(-1), 2e-5, "known mass k=8")


def random_layers(cli, rng):
    """GQA, causal, two layers in one file each, every variant against float64."""
    layers, B, Hq, Hkv, Lq, Lk, D, window = 2, 2, 4, 2, 12, 40, 16, 3
    q = rng.standard_normal((layers, B, Hq, Lq, D))
    k = rng.standard_normal((layers, B, Hkv, Lk, D)) * np.linspace(2.0, 0.3, D)
    v = rng.standard_normal((layers, B, Hkv, Lk, D))
    u = rng.standard_normal((layers, B, Hkv, Lk))
    basis = np.stack([[np.linalg.qr(rng.standard_normal((D, D)))[0] for _ in range(Hkv)]
                      for _ in range(layers)])
    q, k, v, u, basis = (x.astype(np.float32) for x in (q, k, v, u, basis))
    files = []
    for l in range(layers):  # one file per layer for q, a layer axis for the others
        np.save(cli.path(f"r_q{l}.npy"), q[l])
        files.append(cli.path(f"r_q{l}.npy"))
    for name, x in (("k", k), ("v", v), ("u", u), ("basis", basis)):
        np.save(cli.path(f"r_{name}.npy"), x)
    p = cli.run("fidelity", "activations", "--q", ",".join(files), "--k", cli.path("r_k.npy"),
                "--v", cli.path("r_v.npy"), "--u", cli.path("r_u.npy"), "--basis",
                cli.path("r_basis.npy"), "--causal", "--topk", "2,8", "--sparsek-k", "0,4",
                "--sparsek-window", str(window), "--loki-d-f", "0.25,1", "--loki-k-f", "0.25",
                "--rows", str(Lq), "--json", cli.path("r.json"), "--max-error", "0.3")
    if p.returncode:
        return
    check("recommended for every layer:" in p.stdout, "no model-wide recommendation printed")
    rep = json.load(open(cli.path("r.json")))
    check(rep["evaluated_batches"] == [0, B], f"evaluated batches {rep['evaluated_batches']}")
    scale = 1 / np.sqrt(D)
    for l in range(layers):
        got = rep["layers"][l]
        knobs = [("topk", {"k": 2}), ("topk", {"k": 8}),
                 ("loki", {"d_f": 0.25, "k_f": 0.25}), ("loki", {"d_f": 1.0, "k_f": 0.25}),
                 ("sparsek", {"k": 0}), ("sparsek", {"k": 4})]
        ref = reference_layer(*(x[l].astype(np.float64) for x in (q, k, v, u, basis)), True,
                              scale, knobs, window)
        by_label = {r["label"]: r for r in got["results"]}
        check(len(got["results"]) == len(knobs), f"layer {l}: {len(got['results'])} results")
        labels = {("topk", 2): "k=2", ("topk", 8): "k=8", ("sparsek", 0): f"k=0 w={window}",
                  ("sparsek", 4): f"k=4 w={window}"}
        worst = {}
        for name, knob in knobs:
            label = (labels[(name, knob["k"])] if name != "loki"
                     else f"d_f={knob['d_f']:g} k_f={knob['k_f']:g}")
            r = by_label.get(label)
            if r is None:
                check(False, f"layer {l}: no result {label}")
                continue
            heads = ref[(name, json.dumps(knob, sort_keys=True))]
            what = f"layer {l} {name} {label}"
            close([h["rel_error"] for h in r["heads"]], [x[0] for x in heads], 5e-5 + 1e-3 *
                  max(x[0] for x in heads), what + " rel error")
            close([h["worst_row_error"] for h in r["heads"]], [x[1] for x in heads],
                  1e-4 + 1e-3 * max(x[1] for x in heads), what + " worst row")
            close([h["recall"] for h in r["heads"]], [x[2].mean() for x in heads], 1e-9,
                  what + " recall")
            close([h["mass"] for h in r["heads"]], [x[3].mean() for x in heads], 1e-6,
                  what + " mass")
            close([h["min_mass"] for h in r["heads"]], [x[3].min() for x in heads], 1e-6,
                  what + " min mass")
            worst[label] = (max(x[0] for x in heads), r["bytes"], name)
        # The recommendation: the cheapest knob of each variant whose worst head meets 0.3.
        for name in ("topk", "loki", "sparsek"):
            mine = sorted(((b, lab) for lab, (e, b, n) in worst.items() if n == name and e <= 0.3),
                          key=lambda t: t[0])
            rec = got["recommendation"][name]
            if mine:
                check(rec["met"] and rec["label"] == mine[0][1],
                      f"layer {l} {name}: recommended {rec}, want {mine[0][1]}")
            else:
                check(not rec["met"], f"layer {l} {name}: recommended {rec}, none meets 0.3")
        # Loki's basis variance on the evaluated keys, per kv head.
        for g in range(Hkv):
            x = k[l][:, g].reshape(-1, D).astype(np.float64)
            x -= x.mean(0)
            share = np.cumsum(((x @ basis[l][g].astype(np.float64)) ** 2).sum(0)) / (x**2).sum()
            close(got["loki_variance"][g]["evaluated"], share, 1e-5, f"layer {l} kv {g} share")


def calibrate_report(cli, rng):
    """Known spectrum: head 0 low-rank (4 strong axes), head 1 isotropic; held-out 20%."""
    L, H, N, D = 2, 2, 500, 16
    sig = [np.r_[np.full(4, 4.0), np.full(12, 0.25)], np.ones(D)]
    keys = np.empty((L, H, N, D))
    for l in range(L):
        for h in range(H):
            Q = np.linalg.qr(rng.standard_normal((D, D)))[0]
            keys[l, h] = (rng.standard_normal((N, D)) * sig[h]) @ Q.T + 3.0
    keys = keys.astype(np.float32)
    np.save(cli.path("c_keys.npy"), keys)
    p = cli.run("calibrate", "loki", "--keys", cli.path("c_keys.npy"), "--out",
                cli.path("c_basis.npy"), "--holdout", "0.2", "--d-f", "0.25", "--warn-below", "0.8",
                "--report", cli.path("c.json"))
    if p.returncode:
        return
    check("warning: 2 of 4 heads" in p.stdout, "calibrate: no warning for the 2 isotropic heads")
    rep = json.load(open(cli.path("c.json")))
    n_cal = N - round(0.2 * N)
    check(rep["heldout_samples"] == N - n_cal, f"held out {rep['heldout_samples']}")
    for hj in rep["heads"]:
        l, h = hj["layer"], hj["head"]
        x = keys[l, h].astype(np.float64)
        cal, held = x[:n_cal] - x[:n_cal].mean(0), x[n_cal:] - x[n_cal:].mean(0)
        w, vecs = np.linalg.eigh(cal.T @ cal)
        vecs = vecs[:, ::-1]
        held_share = np.cumsum(((held @ vecs) ** 2).sum(0)) / (held**2).sum()
        cal_share = np.cumsum(w[::-1]) / w.sum()
        what = f"calibrate layer {l} head {h}"
        close(hj["heldout_share"], held_share, 2e-4, what + " held-out share")
        close(hj["calibration_share"], cal_share, 2e-4, what + " calibration share")
        known = np.cumsum(np.sort(sig[h] ** 2)[::-1]) / (sig[h] ** 2).sum()
        close(hj["heldout_share"], known, 0.08, what + " held-out share vs the known spectrum")
        check(hj["warning"] == (h == 1), f"{what}: warning {hj['warning']}")


def refusals(cli):
    base = ["fidelity", "activations", "--q", cli.path("r_q0.npy") + "," + cli.path("r_q1.npy"),
            "--k", cli.path("r_k.npy"), "--v", cli.path("r_v.npy")]
    cases = [
        (base + ["--variants", "sparsek", "--u", cli.path("r_u.npy")], 2, "add --causal"),
        (base + ["--variants", "sparsek", "--causal"], 2, "needs the key scores u"),
        (base + ["--variants", "topk,nope"], 2, "unknown variant 'nope'"),
        (base + ["--topk", "0"], 2, "--topk values must be >= 1"),
    ]
    for args, status, phrase in cases:
        p = cli.run(*args, status=status)
        lines = p.stderr.strip().splitlines()
        check(len(lines) == 1 and phrase in p.stderr, f"refusal '{phrase}': stderr {p.stderr!r}")
    # one q layer against two k layers
    p = cli.run("fidelity", "activations", "--q", cli.path("r_q0.npy"), "--k", cli.path("r_k.npy"),
                "--v", cli.path("r_v.npy"), "--variants", "topk", status=1)
    check("same number of layers" in p.stderr, f"layer count refusal: {p.stderr!r}")


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    exe, work, launcher = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(work, exist_ok=True)
    seed = int(os.environ.get("HATTN_SEED", "20261206"), 0)
    print(f"[   SEED   ] HATTN_SEED={seed}")
    cli = Cli(exe, launcher, work)
    for n, test in enumerate((known_mass, random_layers, calibrate_report)):
        print(f"[ RUN      ] {test.__name__}")
        test(cli, np.random.default_rng([seed, n]))
    print("[ RUN      ] refusals")
    refusals(cli)
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
