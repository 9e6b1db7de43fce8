#!/usr/bin/env python3
"""hattn's CUDA kernels against PyTorch's scaled_dot_product_attention, same GPU, same run.

Loads libhattn_c.so (hattn's C interface) next to PyTorch, hands it PyTorch's device pointers
and current stream, and times both with CUDA events (median of --reps after warm-up). Also
measures a device-to-device copy as the bandwidth yardstick for decode. Every hattn result is
first checked against SDPA computed in float64 on the same (rounded) inputs. Each shape runs in
fp32, bf16 and f16 (--dtypes), PyTorch in the same dtype; decode also as bf16kv / f16kv (fp32 q
and out over a 16-bit cache; PyTorch has no such call, so its row is SDPA in the cache's dtype).

  python3 bench/gpu_bench.py --lib build/runtime/libhattn_c.so [--quick] [--dtypes f32,bf16]
                             [--json out.json]
"""
import argparse
import ctypes
import json
import math
import os
import statistics
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("gpu_bench: PyTorch is required (scripts/setup.sh --peer installs it)", file=sys.stderr)
    sys.exit(2)


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", ctypes.c_int32), ("rank", ctypes.c_int32),
                ("shape", ctypes.c_int64 * 4), ("strides", ctypes.c_int64 * 4),
                ("dtype", ctypes.c_int32)]

# hattn_c.h's HATTN_DTYPE_*, and each output dtype's agreement with the float64 reference: the
# largest |out - ref| / (1 + |ref|) (rel_err) allowed, fp32 accumulation noise, or half an ulp of
# the 16-bit format (2^-9 bf16, 2^-12 f16, relative) with margin.
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
MAX_ERR = {torch.float32: 1e-3, torch.bfloat16: 4e-3, torch.float16: 1e-3}


def describe(t):
    d = Tensor()
    d.data = t.data_ptr()
    d.device = 1 if t.is_cuda else 0
    d.rank = t.dim()
    d.dtype = DTYPE_CODES[t.dtype]
    for i in range(t.dim()):
        d.shape[i] = t.shape[i]
        d.strides[i] = t.stride(i)
    return d


class Hattn:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.hattn_dense_attention.restype = ctypes.c_int
        self.lib.hattn_cuda_available.restype = ctypes.c_int
        self.msg = ctypes.create_string_buffer(4096)

    def cuda_available(self):
        ok = self.lib.hattn_cuda_available(self.msg, len(self.msg))
        return ok == 1, self.msg.value.decode()

    def attention(self, q, k, v, out, causal, lse=None):
        tq, tk, tv, to = describe(q), describe(k), describe(v), describe(out)
        tl = describe(lse) if lse is not None else None
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        rc = self.lib.hattn_dense_attention(
            ctypes.byref(tq), ctypes.byref(tk), ctypes.byref(tv), ctypes.byref(to),
            ctypes.byref(tl) if tl is not None else None, int(causal), ctypes.c_float(0.0),
            stream, self.msg, len(self.msg))
        if rc != 0:
            raise RuntimeError(f"hattn status {rc}: {self.msg.value.decode()}")
        return self.msg.value.decode()  # the kernel's name


def rel_err(out, ref):
    return ((out.double() - ref).abs() / (1 + ref.abs())).max().item()


def time_ms(fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def visible_pairs(lq, lk, causal):
    if not causal:
        return lq * lk
    off = lk - lq
    return sum(min(max(i + off + 1, 0), lk) for i in range(lq))


def reference(q, k, v, causal):
    """SDPA in float64 with hattn's bottom-right causal alignment."""
    q64, k64, v64 = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k64 = k64.repeat_interleave(group, dim=1)
    v64 = v64.repeat_interleave(group, dim=1)
    s = (q64 @ k64.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        lq, lk = q.shape[2], k.shape[2]
        i = torch.arange(lq, device=q.device)[:, None]
        j = torch.arange(lk, device=q.device)[None, :]
        s = s.masked_fill(j > i + (lk - lq), float("-inf"))
    return torch.softmax(s, dim=-1) @ v64


def copy_bandwidth(reps):
    n = 256 * 1024 * 1024  # 1 GiB of fp32
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), reps)
    return 2 * n * 4 / (ms * 1e-3) / 1e9  # read + write


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", default="build/runtime/libhattn_c.so")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--seed", type=int, default=20241124)
    ap.add_argument("--dtypes", default="f32,bf16,f16", help="comma list of f32, bf16, f16")
    a = ap.parse_args()
    dtypes = [x.strip() for x in a.dtypes.split(",") if x.strip()]
    for x in dtypes:
        if x not in DTYPES:
            ap.error(f"unknown dtype '{x}' in --dtypes (f32, bf16, f16)")

    if not torch.cuda.is_available():
        print("gpu_bench: PyTorch sees no CUDA device; nothing to measure", file=sys.stderr)
        return 2
    h = Hattn(a.lib)
    ok, why = h.cuda_available()
    if not ok:
        print(f"gpu_bench: hattn cannot use CUDA: {why}", file=sys.stderr)
        return 2
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the peer too
    dev = torch.cuda.get_device_name()
    print(f"device: {dev}; torch {torch.__version__}; seed {a.seed}; median of {a.reps}")
    copy_gbs = copy_bandwidth(a.reps)
    print(f"device-to-device copy: {copy_gbs:.0f} GB/s (read + write)")

    prefill = [(1, 8, 2048, 64, False), (1, 8, 2048, 128, False), (1, 8, 2048, 128, True)]
    if not a.quick:
        prefill += [(1, 8, 4096, 64, False), (1, 8, 4096, 128, True), (4, 16, 1024, 128, False)]
    decode = [(1, 32, 32768, 128)] + ([] if a.quick else [(1, 32, 4096, 128), (8, 32, 8192, 128)])
    rows = []

    print(f"{'case':44} {'kernel':40} {'hattn ms':>9} {'GFLOP/s':>8} {'sdpa ms':>8} "
          f"{'GFLOP/s':>8} {'ratio':>6} {'rel err':>8}")
    for dname in dtypes:
        dt = DTYPES[dname]
        for b, hq, l, d, causal in prefill:
            q, k, v = (torch.randn(b, hq, l, d, device="cuda").to(dt) for _ in range(3))
            out = torch.full_like(q, float("nan"))
            kernel = h.attention(q, k, v, out, causal)
            torch.cuda.synchronize()
            err = rel_err(out, reference(q, k, v, causal))
            flops = 4.0 * b * hq * d * visible_pairs(l, l, causal)
            t_h = time_ms(lambda: h.attention(q, k, v, out, causal), a.reps)
            t_s = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                          a.reps)
            name = f"{dname} prefill B={b} H={hq} L={l} D={d}{' causal' if causal else ''}"
            r = dict(case=name, dtype=dname, kernel=kernel, hattn_ms=t_h, sdpa_ms=t_s,
                     ratio=t_s / t_h, hattn_gflops=flops / t_h / 1e6,
                     sdpa_gflops=flops / t_s / 1e6, max_err=err, err_limit=MAX_ERR[dt])
            rows.append(r)
            print(f"{name:44} {kernel:40} {t_h:9.3f} {r['hattn_gflops']:8.0f} {t_s:8.3f} "
                  f"{r['sdpa_gflops']:8.0f} {r['ratio']:6.2f} {err:8.1e}")

    print(f"\n{'case':44} {'kernel':40} {'hattn ms':>9} {'GB/s':>8} {'of copy':>8} "
          f"{'sdpa ms':>8} {'ratio':>6} {'rel err':>8}")
    forms = [(x, False) for x in dtypes] + [(x, True) for x in dtypes if x != "f32"]
    for dname, fp32_query in forms:
        dt = DTYPES[dname]
        qt = torch.float32 if fp32_query else dt
        for b, hq, lk, d in decode:
            q = torch.randn(b, hq, 1, d, device="cuda").to(qt)
            k, v = (torch.randn(b, hq, lk, d, device="cuda").to(dt) for _ in range(2))
            out = torch.full_like(q, float("nan"))
            kernel = h.attention(q, k, v, out, False)
            torch.cuda.synchronize()
            err = rel_err(out, reference(q, k, v, False))
            t_h = time_ms(lambda: h.attention(q, k, v, out, False), a.reps)
            q_peer = q.to(dt)
            t_s = time_ms(lambda: F.scaled_dot_product_attention(q_peer, k, v), a.reps)
            gbs = 2.0 * b * hq * lk * d * k.element_size() / (t_h * 1e-3) / 1e9
            form = dname + ("kv" if fp32_query else "")
            name = f"{form} decode B={b} H={hq} Lk={lk} D={d}"
            r = dict(case=name, dtype=form, kernel=kernel, hattn_ms=t_h, sdpa_ms=t_s,
                     ratio=t_s / t_h, hattn_gbs=gbs, share_of_copy=gbs / copy_gbs, max_err=err,
                     err_limit=MAX_ERR[qt])
            rows.append(r)
            print(f"{name:44} {kernel:40} {t_h:9.3f} {gbs:8.0f} {gbs / copy_gbs:8.2f} "
                  f"{t_s:8.3f} {r['ratio']:6.2f} {err:8.1e}")

    bad = [r for r in rows if not r["max_err"] < r["err_limit"]]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=dev, torch=torch.__version__, copy_gbs=copy_gbs, rows=rows), f,
                      indent=1)
    if bad:
        for r in bad:
            print(f"gpu_bench: {r['case']}: relative error {r['max_err']:.2e} >= "
                  f"{r['err_limit']:.0e}",
                  file=sys.stderr)
        print(f"gpu_bench: {len(bad)} case(s) disagree with the float64 reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
