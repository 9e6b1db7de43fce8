"""PyTorch's CPU scaled_dot_product_attention at hattn's benchmark shapes (the peer users reach
for first), in fp32 and, with --dtypes, bf16 and f16. Writes Google Benchmark-style JSON so bench/report.py can merge it.
Run with the interpreter in .venv-peer (scripts/setup.sh --peer)."""
import argparse
import json
import math
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("torch_sdpa.py: torch is not installed (run scripts/setup.sh --peer)")


def visible_pairs(lq, lk, causal):
    if not causal:
        return lq * lk
    return sum(min(max(i + lk - lq + 1, 0), lk) for i in range(lq))


def median_time(run, reps):
    """Seconds: the median of `reps` timed calls of run(), after two untimed ones."""
    for _ in range(2):
        run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_one(q, k, v, causal, reps):
    gqa = q.shape[1] != k.shape[1]  # grouped-query heads: SDPA's own broadcast
    return median_time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                              enable_gqa=gqa), reps)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--dtypes", default="f32",
                   help="comma-separated f32,bf16,f16: SDPA in each (names torch_sdpa_<dtype>/... "
                        "for 16-bit, as hattn_bench's hattn_dense_<dtype>/...)")
    p.add_argument("--batch-only", action="store_true",
                   help="only the padded serving batch (torch_sdpa_<dtype>/batch:32/padded)")
    a = p.parse_args()
    threads = int(os.environ.get("HATTN_BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(20261122)
    lengths = [] if a.batch_only else [512, 2048] if a.quick else [512, 2048, 8192]
    types = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
    dtypes = a.dtypes.split(",")
    for dt in dtypes:
        if dt not in types:
            sys.exit(f"torch_sdpa.py: unknown dtype '{dt}' (f32, bf16, f16)")
    results = []
    for dt, d, length, causal in ((dt, d, length, causal) for dt in dtypes for d in (64, 128)
                                  for length in lengths for causal in (False, True)):
        prefix = "torch_sdpa" if dt == "f32" else f"torch_sdpa_{dt}"
        q, k, v = (torch.randn(1, 8, length, d, dtype=types[dt]) for _ in range(3))
        t = time_one(q, k, v, causal, a.reps)
        flops = 4.0 * 8 * d * visible_pairs(length, length, causal)
        name = f"{prefix}/prefill/L:{length}/D:{d}/causal:{int(causal)}"
        results.append({"name": name, "run_type": "aggregate", "aggregate_name": "median",
                        "real_time": t * 1e3, "time_unit": "ms", "GFLOP/s": flops / t * 1e-9})
        print(f"{name}: {t * 1e3:.2f} ms, {flops / t * 1e-9:.1f} GFLOP/s", flush=True)
    # torch.matmul at the GEMM shapes hattn_bench times OpenBLAS at: the well-configured GEMM
    # bench/report.py compares with when OpenBLAS runs far below the machine's peak.
    gemms = [] if a.batch_only else [("square/N:2048", 2048, 2048, 2048, False)]
    for d in (64, 128):
        for length in lengths:
            gemms.append((f"qk/L:{length}/D:{d}", length, length, d, True))
            gemms.append((f"pv/L:{length}/D:{d}", length, d, length, False))
    # EL's core shape per sample (openblas_sgemm/el_core/...): [H * beam, Dm] x [N, Dm]^T.
    if not a.batch_only:
        for model, dm, heads in (("bart_large", 1024, 16), ("gpt2_small", 768, 12)):
            for bb, beam in (("1x1", 1), ("8x4", 4), ("32x4", 4)):
                gemms.append((f"el_core/{model}/{bb}", heads * beam, 1024, dm, True))
    for tail, m, n, kk, nt in gemms:
        a_ = torch.randn(m, kk)
        b_ = torch.randn(n, kk) if nt else torch.randn(kk, n)
        t = median_time((lambda: a_ @ b_.t()) if nt else (lambda: a_ @ b_), a.reps)
        name = f"torch_matmul/{tail}"
        results.append({"name": name, "run_type": "aggregate", "aggregate_name": "median",
                         "real_time": t * 1e3, "time_unit": "ms",
                         "GFLOP/s": 2.0 * m * n * kk / t * 1e-9})
        print(f"{name}: {t * 1e3:.2f} ms, {2.0 * m * n * kk / t * 1e-9:.1f} GFLOP/s", flush=True)
    # The dense FFN y = relu(x W1^T) W2^T at hattn_bench's top-k FFN shapes (openblas_ffn/...):
    # the other dense FFN a CPU user has, in fp32 and in each 16-bit dtype asked for.
    ffns = [] if a.batch_only else [(768, 3072), (1024, 16384)]
    for dt, (dm, dff) in ((dt, s) for dt in dtypes for s in ffns):
        x = torch.randn(512, dm, dtype=types[dt])
        w1 = (torch.randn(dff, dm) * dm ** -0.5).to(types[dt])
        w2t = (torch.randn(dff, dm) * dff ** -0.5).to(types[dt])
        t = median_time(lambda: torch.relu(x @ w1.t()) @ w2t, a.reps)
        prefix = "torch_ffn" if dt == "f32" else f"torch_ffn_{dt}"
        name = f"{prefix}/T:512/D:{dm}/dff:{dff}"
        flops = 4.0 * 512 * dm * dff
        results.append({"name": name, "run_type": "aggregate", "aggregate_name": "median",
                        "real_time": t * 1e3, "time_unit": "ms", "GFLOP/s": flops / t * 1e-9})
        print(f"{name}: {t * 1e3:.2f} ms, {flops / t * 1e-9:.1f} GFLOP/s", flush=True)
        del x, w1, w2t
    decode = [] if a.batch_only else [4096, 32768] if a.quick else [4096, 32768, 131072]
    # MHA (32 kv heads) at every Lk, and grouped-query (8 kv heads, as hattn_bench's .../Hkv:8)
    # at 4K and 32K.
    shapes = [(dt, lk, hkv) for dt in dtypes for lk in decode for hkv in (32, 8)
              if hkv == 32 or lk <= 32768]
    for dt, lk, hkv in shapes:
        prefix = "torch_sdpa" if dt == "f32" else f"torch_sdpa_{dt}"
        q = torch.randn(1, 32, 1, 128, dtype=types[dt])
        k, v = (torch.randn(1, hkv, lk, 128, dtype=types[dt]) for _ in range(2))
        t = time_one(q, k, v, False, a.reps)
        size = 4.0 if dt == "f32" else 2.0
        gbs = size * 128 * (2 * 32 + 2 * hkv * lk) / t * 1e-9  # q, k, v read, out written
        name = f"{prefix}/decode/Lk:{lk}/D:128" + ("" if hkv == 32 else f"/Hkv:{hkv}")
        results.append({"name": name, "run_type": "aggregate", "aggregate_name": "median",
                        "real_time": t * 1e3, "time_unit": "ms", "GB/s": gbs})
        print(f"{name}: {t * 1e3:.2f} ms, {gbs:.1f} GB/s", flush=True)
    # A serving batch as a CPU user runs it in PyTorch today (hattn_bench's
    # hattn_paged_<dtype>/batch:32/...): 32 sequences of 512 to 32K tokens padded to the longest,
    # a boolean mask hiding each sequence's padding, grouped-query heads (32 over 8). GB/s counts
    # the bytes held (each sequence's own tokens), as hattn_bench does. Skipped by --quick.
    if not a.quick or a.batch_only:
        for dt in dtypes:
            if dt == "f16":
                continue
            prefix = "torch_sdpa" if dt == "f32" else f"torch_sdpa_{dt}"
            lengths_b = [512 + (32768 - 512) * b // 31 for b in range(32)]
            q = torch.randn(32, 32, 1, 128, dtype=types[dt])
            k, v = (torch.randn(32, 8, 32768, 128, dtype=types[dt]) for _ in range(2))
            mask = torch.arange(32768)[None, :] < torch.tensor(lengths_b)[:, None]
            mask = mask[:, None, None, :]
            t = median_time(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                   enable_gqa=True), a.reps)
            size = 4.0 if dt == "f32" else 2.0
            gbs = size * 128 * (2 * 8 * sum(lengths_b) + 2 * 32 * 32) / t * 1e-9
            name = f"{prefix}/batch:32/padded"
            results.append({"name": name, "run_type": "aggregate", "aggregate_name": "median",
                            "real_time": t * 1e3, "time_unit": "ms", "GB/s": gbs})
            print(f"{name}: {t * 1e3:.2f} ms, {gbs:.1f} GB/s (bytes held)", flush=True)
            del q, k, v, mask
    with open(a.out, "w") as f:
        json.dump({"context": {"torch": torch.__version__, "threads": threads},
                   "benchmarks": results}, f, indent=1)


if __name__ == "__main__":
    main()
