#!/usr/bin/env python3
"""hattn's CUDA kernels against PyTorch's scaled_dot_product_attention, fp32, same GPU, same run.

Loads libhattn_c.so (hattn's C interface) next to PyTorch, hands it PyTorch's device pointers
and current stream, and times both with CUDA events (median of --reps after warm-up). Also
measures a device-to-device copy as the bandwidth yardstick for decode. Every hattn result is
first checked against SDPA computed in float64.

  python3 bench/gpu_bench.py --lib build/runtime/libhattn_c.so [--quick] [--json out.json]
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
                ("shape", ctypes.c_int64 * 4), ("strides", ctypes.c_int64 * 4)]


def describe(t):
    d = Tensor()
    d.data = t.data_ptr()
    d.device = 1 if t.is_cuda else 0
    d.rank = t.dim()
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
    a = ap.parse_args()

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

    print(f"{'case':38} {'kernel':36} {'hattn ms':>9} {'GFLOP/s':>8} {'sdpa ms':>8} "
          f"{'GFLOP/s':>8} {'ratio':>6} {'max err':>8}")
    for b, hq, l, d, causal in prefill:
        q, k, v = (torch.randn(b, hq, l, d, device="cuda") for _ in range(3))
        out = torch.full_like(q, float("nan"))
        kernel = h.attention(q, k, v, out, causal)
        torch.cuda.synchronize()
        err = (out.double() - reference(q, k, v, causal)).abs().max().item()
        flops = 4.0 * b * hq * d * visible_pairs(l, l, causal)
        t_h = time_ms(lambda: h.attention(q, k, v, out, causal), a.reps)
        t_s = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), a.reps)
        name = f"prefill B={b} H={hq} L={l} D={d}{' causal' if causal else ''}"
        r = dict(case=name, kernel=kernel, hattn_ms=t_h, sdpa_ms=t_s, ratio=t_s / t_h,
                 hattn_gflops=flops / t_h / 1e6, sdpa_gflops=flops / t_s / 1e6, max_err=err)
        rows.append(r)
        print(f"{name:38} {kernel:36} {t_h:9.3f} {r['hattn_gflops']:8.0f} {t_s:8.3f} "
              f"{r['sdpa_gflops']:8.0f} {r['ratio']:6.2f} {err:8.1e}")

    print(f"\n{'case':38} {'kernel':36} {'hattn ms':>9} {'GB/s':>8} {'of copy':>8} {'sdpa ms':>8} "
          f"{'max err':>8}")
    for b, hq, lk, d in decode:
        q = torch.randn(b, hq, 1, d, device="cuda")
        k, v = (torch.randn(b, hq, lk, d, device="cuda") for _ in range(2))
        out = torch.full_like(q, float("nan"))
        kernel = h.attention(q, k, v, out, False)
        torch.cuda.synchronize()
        err = (out.double() - reference(q, k, v, False)).abs().max().item()
        t_h = time_ms(lambda: h.attention(q, k, v, out, False), a.reps)
        t_s = time_ms(lambda: F.scaled_dot_product_attention(q, k, v), a.reps)
        gbs = 2.0 * b * hq * lk * d * 4 / (t_h * 1e-3) / 1e9
        name = f"decode B={b} H={hq} Lk={lk} D={d}"
        r = dict(case=name, kernel=kernel, hattn_ms=t_h, sdpa_ms=t_s, ratio=t_s / t_h,
                 hattn_gbs=gbs, share_of_copy=gbs / copy_gbs, max_err=err)
        rows.append(r)
        print(f"{name:38} {kernel:36} {t_h:9.3f} {gbs:8.0f} {gbs / copy_gbs:8.2f} {t_s:8.3f} "
              f"{err:8.1e}")

    bad = [r for r in rows if not r["max_err"] < 1e-3]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=dev, torch=torch.__version__, copy_gbs=copy_gbs, rows=rows), f,
                      indent=1)
    if bad:
        print(f"gpu_bench: {len(bad)} case(s) disagree with the float64 reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
