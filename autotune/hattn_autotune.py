#!/usr/bin/env python3
"""hattn-autotune (dense on x86 and CUDA; topk, loki, sparsek and its mask operator, topk_ffn,
el and linear on x86): search a schedule's tunables, write a table.

Each candidate is compiled ahead of time by hattn's own generator (build/generators/
hattn_generators, `tunables=` overrides a table line), linked into a shared object and timed by
autotune/runner.cpp in a separate process, which also checks the output against a double-precision
reference: a wrong or crashing candidate is recorded as such and never wins. Compiles run in
parallel (--jobs); timings run one at a time, so the machine should be otherwise idle.

Search: coordinate descent from the seed (the current table, or --start for a deliberately bad
one): each round tries every legal value of one tunable with the others fixed, nearest values
first, keeps the best, and stops when a full round finds nothing better or the budget runs out.
Every measured point is cached (--cache, JSON), so a second run resumes without re-measuring.

  .venv/bin/python autotune/hattn_autotune.py --phase prefill --isa avx2 --budget 10m \
      --out build/autotune/schedules
writes a full schedules/ folder with the tuned line replaced (comments give the machine, date and
times); build with it: cmake -DHATTN_SCHEDULES=build/autotune/schedules ...

Another machine (a GPU, a CPU without Halide): --export DIR builds every legal point of the space
here (CUDA ones checked by ptxas), DIR/run.sh times them there with the same runner, and
--import DIR (same options) writes the winner. See autotune/README.md.
"""
import argparse
import concurrent.futures as cf
import copy
import datetime
import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

ISAS = {  # lanes of fp32, vector registers, Halide target
    "avx512": (16, 32, "x86-64-linux-avx-avx2-avx512-avx512_skylake-f16c-fma-sse41"),
    # AVX512-BF16 (Zen 4, Sapphire Rapids): the build of dense's bf16 prefill kernels
    # (cmake/HattnKernels.cmake), which reads x86/avx512_zen4.table, then x86/avx512.table.
    "avx512_zen4": (16, 32, "x86-64-linux-avx-avx2-avx512-avx512_skylake-avx512_cannonlake-"
                            "avx512_zen4-f16c-fma-sse41"),
    "avx2": (8, 16, "x86-64-linux-avx-avx2-f16c-fma-sse41"),
    "sse41": (4, 16, "x86-64-linux-sse41"),
    # aarch64 (schedules/arm/neon.table). On another CPU the candidates, the runner and its
    # Halide runtime are cross-compiled (g++-aarch64-linux-gnu) for --export: timed on the ARM
    # machine by its run.sh (or under qemu-aarch64, for a check of the flow, not of speed).
    "neon": (4, 32, "arm-64-linux"),
    # Not a CPU: the cuda table (schedules/cuda/cuda.table), sm_80 PTX; timed by the runner on a
    # machine with an NVIDIA GPU (--export builds the candidates for it here).
    "cuda": (0, 0, "x86-64-linux-cuda-cuda_capability_80"),
}

# The declared legal space of schedules/cpu/dense_cpu.cpp, with its pruning rules.
SPACE = {
    "prefill": {
        "qb": [8, 16, 24, 32, 48, 64, 96, 128],
        "kb": [64, 128, 256, 512],
        "tq": [1, 2, 3, 4],
        "tk": [2, 3, 4, 5, 6, 8],
        "td": [2, 4, 6, 8],
    },
    # kb = 256 is fixed: the dispatcher's split count assumes 256 keys per block. Decode has no
    # qb: its query block is a kv group's rows; tr of them per P.V tile; kt = 1 tiles q.k as tk
    # keys x tg rows (tg unread without it).
    "decode": {"kb": [256], "tq": [1, 2, 4], "tk": [1, 2, 4, 8], "td": [2, 4, 8, 16],
               "tr": [1, 2], "kt": [0, 1], "tg": [1, 2, 4]},
}

# The declared legal space of schedules/cpu/topk_cpu.cpp: the rows of a prefill chunk (qb) in
# the lanes of the dense micro-kernel (tq x tk; kb is not read by prefill); decode splits the
# keys into blocks of kb, D in the lanes (tq vectors), tk keys unrolled; kt = 1 tiles q.k as tk
# keys x tg query heads of the kv group (tg is read only with kt = 1, tq only without).
TOPK_SPACE = {
    "prefill": {"qb": [8, 16, 24, 32, 48, 64, 96, 128], "kb": [256], "tq": [1, 2, 3, 4],
                "tk": [2, 3, 4, 5, 6, 8]},
    "decode": {"qb": [1], "kb": [64, 128, 256, 512, 1024], "tq": [1, 2, 4, 8], "tk": [1, 2, 4, 8],
               "kt": [0, 1], "tg": [1, 2, 4]},
}

# The declared legal spaces of the selection variants' schedules (schedules/cpu/loki_cpu.cpp,
# sparsek_cpu.cpp, topk_cpu.cpp's topk_ffn), as read_sparse_tiles reads them (qb kb tq tk). A
# tunable a phase does not read is held at the table's value, so the line stays complete:
#   loki prefill: rows in the lanes, as topk (kb unread); decode: kb keys per approximate-score
#     block (qb, tq, tk unread);
#   sparsek: qb query rows per parallel task (each row gathers its own k + w keys: no tiles);
#   topk_ffn: qb tokens per task in the lanes of a tq x tk score tile (kb unread); the W2 sum in
#     tasks of gt tokens over slices of gd values of D (gd = 0: whole rows).
LOKI_SPACE = {
    "prefill": dict(TOPK_SPACE["prefill"]),
    "decode": {"qb": [1], "kb": [64, 128, 256, 512, 1024, 2048], "tq": [1], "tk": [4]},
}
SPARSEK_SPACE = {"prefill": {"qb": [1, 2, 4, 8, 16, 32, 64, 128], "kb": [256], "tq": [1], "tk": [4]}}
TOPK_FFN_SPACE = {"prefill": dict(TOPK_SPACE["prefill"], gt=[32, 64, 128, 256, 512],
                                   gd=[0, 16, 32, 64, 128])}
# schedules/cpu/el_cpu.cpp: qb core rows per task, kb keys per block of r = P Hs; the score dot
# tile tj x tw, the outer-product tile tv vectors x tc rows (qt and P Hs), the head-space dot
# tile to x tn. One kernel serves both masks (causal is a run-time input).
EL_SPACE = {"prefill": {"qb": [4, 8, 16, 32], "kb": [8, 16, 32, 64], "tj": [2, 3, 4, 6, 8],
                        "tw": [1, 2, 4, 6], "tv": [1, 2, 4], "tc": [1, 2, 4, 6],
                        "to": [2, 3, 4, 6], "tn": [2, 3, 4, 6]}}
# schedules/cpu/el_cpu.cpp's linear layer: chunks of qb tiles of `to` outputs per task (their
# rows of W stay in L2), a to x tn (outputs x input rows) dot-product tile.
LINEAR_SPACE = {"prefill": {"qb": [1, 2, 4, 8, 16, 32, 64], "to": [1, 2, 3, 4, 6, 8],
                            "tn": [1, 2, 3, 4, 6]}}
# schedules/cpu/sparsek_cpu.cpp's SparseK operator ("sparsek mask"): qb rows per task, tk vectors
# of partial sums per bisection pass.
SPARSEK_SPACE["mask"] = {"qb": [1, 2, 4, 8, 16], "tk": [1, 2, 3, 4, 6, 8]}

# Tunables the CPU schedules read with a default (ctx.tunables.get_or), which a table line may
# therefore omit: the value a line without them gets.
OPTIONAL_TUNABLES = {"kt": 0, "tg": 1, "tr": 1, "gd": 0}

# Each CPU variant's declared space; `all` tunes every (variant, phase) of this table.
CPU_SPACES = {"dense": SPACE, "topk": TOPK_SPACE, "loki": LOKI_SPACE, "sparsek": SPARSEK_SPACE,
              "topk_ffn": TOPK_FFN_SPACE, "el": EL_SPACE, "linear": LINEAR_SPACE}
# The runner's sources: what it is built from, and what judged a cached point (see Tuner.stale).
# runtime/src/sparsek_sweep.cpp is the runtime's own SparseK selection, sparsek's input;
# runtime/src/tensor.cpp its 16-bit conversions; tests/reference.cpp the test suite's
# double-precision oracle.
RUNNER_SOURCES = [os.path.join(HERE, "runner.cpp"), os.path.join(HERE, "runner_cases.cpp"),
                  os.path.join(ROOT, "tests", "reference.cpp"),
                  os.path.join(ROOT, "runtime", "src", "sparsek_sweep.cpp"),
                  os.path.join(ROOT, "runtime", "src", "tensor.cpp")]
# runtime/include/hattn/kernel_registry.h holds each variant's kernel signature, which the runner
# calls a candidate through.
RUNNER_HEADERS = [os.path.join(HERE, "runner_cases.h"), os.path.join(ROOT, "tests", "reference.h"),
                  os.path.join(ROOT, "runtime", "include", "hattn", "kernel_registry.h"),
                  os.path.join(ROOT, "runtime", "include", "hattn", "hattn.h")]
# A candidate's target features after the ISA's: no runtime (the runner holds it), and
# user_context, as cmake/HattnKernels.cmake builds the library's kernels: the runner calls each
# through its variant's signature in kernel_registry.h, user_context first.
CANDIDATE_FEATURES = "-no_runtime-user_context"

# Variants whose generator takes no phase, mask or head-dim parameter, and whose table key has
# no head dim: one kernel per table line. sparsek's mask phase is one too (see unkeyed()).
UNKEYED = {"topk_ffn", "el", "linear"}


def unkeyed(variant, phase):
    return variant in UNKEYED or (variant, phase) == ("sparsek", "mask")


def generator_of(variant, phase):
    """The generator (and the runner's VARIANT) of a table line: sparsek's mask phase is the
    SparseK operator, a generator of its own; every other line is its variant's."""
    return "sparsek_mask" if (variant, phase) == ("sparsek", "mask") else variant
# Variants whose prefill schedule puts query rows (tokens) in the SIMD lanes: a block of qb rows
# must be whole micro-tiles of tq vectors.
ROWS_IN_LANES = {"dense", "topk", "loki", "topk_ffn"}

# The declared legal space of schedules/cuda/dense_cuda.cpp (no tq: a thread owns one row).
CUDA_SPACE = {
    "prefill": {"qb": [8, 16, 32, 64], "kb": [32, 64, 128], "tk": [1, 2, 4, 8],
                "td": [2, 4, 8, 16, 32]},
    "decode": {"qb": [1], "kb": [256], "tk": [1, 2, 4, 8], "td": [1, 2, 4, 8, 16]},
}


def legal_cuda(phase, t, d):
    """A thread block of at most 1024 threads and 48 KiB of static shared memory; tiles that
    divide their dimension (a partial strip is guarded code on every iteration)."""
    if d % t["td"] != 0 or t["kb"] % t["tk"] != 0:
        return False
    if phase == "decode":  # threads: D / td for the state, 256 / tk for the scores, 32 partials
        return max(d // t["td"], t["kb"] // t["tk"], 32) <= 1024
    threads = max(t["qb"] * (d // t["td"]), t["qb"] * (t["kb"] // t["tk"]))
    shared = 4 * (4 * t["qb"] * d + 2 * t["qb"] * t["kb"])  # state (3), q, scores, probs
    return threads <= 1024 and shared <= 48 * 1024


def legal(phase, t, vec, regs, d=128, variant="dense"):
    if vec == 0:
        return legal_cuda(phase, t, d)
    if variant == "linear":  # to x tn accumulators, a vector of each of the tn rows, one of W
        return t["to"] * t["tn"] + t["tn"] + 1 <= regs
    if variant == "el":  # each tile's accumulators plus its operands fit the registers
        return (t["tv"] * t["tc"] + t["tv"] + 1 <= regs and t["tj"] * t["tw"] + t["tw"] + 1 <= regs
                and t["to"] * t["tn"] + t["tn"] + 1 <= regs)
    if phase == "decode":  # tg is read only with kt = 1 (dense, topk)
        return t.get("kt", 0) == 1 or t.get("tg", 1) == 1
    if variant not in ROWS_IN_LANES:
        return True
    # topk_ffn's W2 sum keeps gd / vec vectors of sums, plus a row's vector and a broadcast.
    if "gd" in t and (t["gd"] % vec != 0 or t["gd"] // vec + 2 > regs):
        return False
    if t["qb"] % (t["tq"] * vec) != 0:  # a query block is whole micro-tiles
        return False
    # Register pressure: tq x tk accumulators plus tq query vectors plus a broadcast (same for
    # tq x td in P.V); more spills, so it is obviously bad.
    return t["tq"] * t["tk"] + t["tq"] + 1 <= regs and t["tq"] * t.get("td", 0) + t["tq"] + 1 <= regs


def cpu_model():
    """This machine's CPU as /proc/cpuinfo names it (the stamp of a written line)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.split(":")[0].strip() in ("model name", "Model", "CPU part"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def is_aarch64_host():
    return platform.machine() in ("aarch64", "arm64")


def cross_compiled(isa):
    """True for an ISA this machine cannot run: its candidates are built here (cross-compiled)
    and timed only on the target, by --export and --import."""
    return isa == "neon" and not is_aarch64_host()


def detect_isa(a=None):
    """The best ISA of ISAS this machine runs (Linux /proc/cpuinfo flags) for the kernel of `a`:
    avx512_zen4 only for the kernels built for it (dense bf16 prefill)."""
    if is_aarch64_host():
        return "neon"
    try:
        flags = set(next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split())
    except (OSError, StopIteration):
        return "sse41"
    zen4_kernel = a is not None and (a.variant, a.phase, a.dtype) == ("dense", "prefill", "bf16")
    if zen4_kernel and {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"} <= flags:
        return "avx512_zen4"
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma", "f16c"} <= flags:
        return "avx2"
    return "sse41"


def parse_key(k):
    """The inverse of key_of: 'kb:128,qb:16' -> {'kb': 128, 'qb': 16}."""
    return {n: int(v) for n, v in (kv.split(":") for kv in k.split(","))}


def parse_runner_line(fields):
    """`ok median_ms=.. ...`, `wrong rel_err=..` or `error <why>` as a dict."""
    res = {"status": fields[0] if fields else "error"}
    for f in fields[1:]:
        if "=" in f:
            k, v = f.split("=", 1)
            try:
                res[k] = float(v)
            except ValueError:
                res[k] = v
    if res["status"] not in ("ok", "wrong"):  # `error <why>`, or anything else the runner printed
        res["why"] = " ".join(fields[1:] if res["status"] == "error" else fields)
        res["status"] = "error"
    if res["status"] == "ok" and not isinstance(res.get("median_ms"), float):
        res["status"] = "error"
    return res


# dest/run.sh of --export: needs only a POSIX shell and the files next to it.
RUN_SH = """#!/bin/sh
# Times every candidate of this folder with hattn-tune-runner (no Halide needed), ROUNDS times
# interleaved (default 3), and prints one line per timing: NAME STATUS FIELDS...
#   ./run.sh [ROUNDS] > results.txt     then, where the candidates were built:
#   hattn_autotune.py <the same options> --import <this folder>
cd "$(dirname "$0")" || exit 1
rounds=${1:-3}
args=$(cat args.txt)
r=0
while [ "$r" -lt "$rounds" ]; do
  r=$((r + 1))
  echo "[run.sh] round $r of $rounds" >&2
  while read -r name key; do
    # HATTN_RUNNER_WRAPPER: e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu" to try an ARM export
    # on another CPU (a check that it runs and is right; its times are the emulator's).
    line=$(timeout 120 $HATTN_RUNNER_WRAPPER ./hattn-tune-runner "./$name.so" "$name" $args 2>/dev/null | tail -n 1)
    echo "$name ${line:-error no output}"
  done < candidates.txt
done
"""


# --dtype: the generator's parameters for each dtype.
DTYPE_PARAMS = {"f32": [], "bf16": ["dtype=bfloat16"], "f16": ["dtype=float16"],
                "bf16kv": ["dtype=bfloat16", "fp32_query=true"],
                "f16kv": ["dtype=float16", "fp32_query=true"]}


def with_dtype(name, a):
    """`name` with the dtype of a 16-bit kernel (dense.bf16), as schedules/table.h keys table
    lines and the runner takes its VARIANT."""
    return name if a.dtype == "f32" else f"{name}.{a.dtype}"


def table_variant(a):
    """The table line's variant field."""
    return with_dtype(a.variant, a)


def table_head(a):
    """The table line's head-dim field: d<D>, or `any` for a kernel without one (topk_ffn)."""
    return "any" if unkeyed(a.variant, a.phase) else f"d{a.d}"


def key_of(t):
    return ",".join(f"{n}:{t[n]}" for n in sorted(t))


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("inf")


class Tuner:
    """`a` holds the kernel (variant, phase, mask, head dim, ISA) and the first shape; `shapes`
    (default [a]) every shape it is timed at: a point's score is the geometric mean of its
    times over them, so each shape weighs the same whatever its size."""

    def __init__(self, a, shapes=None):
        self.a = a
        self.shapes = shapes or [a]
        self.vec, self.regs, self.target = ISAS[a.isa]
        self.work = os.path.abspath(a.work)
        os.makedirs(self.work, exist_ok=True)
        self.cache_path = a.cache or os.path.join(self.work, "cache.json")
        self.cache = json.load(open(self.cache_path)) if os.path.exists(self.cache_path) else {}
        self.gen = os.path.join(a.build, "generators", "hattn_generators")
        self.runner = os.path.join(self.work, "hattn-tune-runner")
        # Candidates for another CPU architecture: cross-compiled, timed only on that machine.
        self.cross = cross_compiled(a.isa)
        self.cxx = "aarch64-linux-gnu-g++" if self.cross else "c++"
        if self.cross and shutil.which(self.cxx) is None:
            raise SystemExit(f"hattn-autotune: --isa neon on this {platform.machine()} machine "
                             f"cross-compiles with {self.cxx}, which is not installed "
                             "(scripts/setup.sh installs g++-aarch64-linux-gnu)")
        if self.cross:
            self.runner = os.path.join(self.work, "hattn-tune-runner-aarch64")
        self.deadline = time.time() + a.budget_s
        self.done = 0
        # What judged a point: a cached failure judged by another runner (its sources changed,
        # e.g. a fixed check) is measured again; a cached time stays.
        self.runner_id = hashlib.sha1(b"".join(open(f, "rb").read()
                                               for f in RUNNER_SOURCES + RUNNER_HEADERS)).hexdigest()[:12]

    def build_runner(self):
        inc = self.a.halide_include
        if not inc:
            import halide  # only for its include directory (HalideRuntime.h)

            inc = os.path.join(os.path.dirname(halide.__file__), "include")
        rt = os.path.join(self.a.build, "generators", "libhattn_halide_runtime.a")
        if self.cross:  # the Halide runtime for the target, from hattn's own generator binary
            rt = os.path.join(self.work, "hattn_tune_runtime_aarch64.a")
            subprocess.run([self.gen, "-r", "hattn_tune_runtime_aarch64", "-e", "static_library",
                            "-o", self.work, f"target={self.target}"], check=True)
        # Static libstdc++: an exported runner needs only glibc on the target.
        cmd = [self.cxx, "-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-isystem", inc,
               "-I", os.path.join(ROOT, "tests"), "-I", os.path.join(ROOT, "runtime", "src"),
               "-I", os.path.join(ROOT, "runtime", "include"),
               *RUNNER_SOURCES, "-o", self.runner, "-rdynamic", "-static-libstdc++", "-static-libgcc",
               "-Wl,--whole-archive", rt, "-Wl,--no-whole-archive", "-ldl", "-lpthread"]
        subprocess.run(cmd, check=True)

    def shape_args(self, s=None):
        a = s or self.a
        splits = 1
        if a.variant == "topk_ffn":  # D: model dim, LQ: tokens, LK: d_ff
            return [str(x) for x in (a.d, 1, 1, 1, a.lq, a.lk, a.topk)]
        if a.variant == "el":  # D: model dim, H: heads, LQ: tokens, LK: hidden states, KNOB: beam
            return [str(x) for x in (a.d, a.b, a.h, 1, a.lq, a.lk, a.beam)]
        if a.variant == "linear":  # D: input features, LQ: rows, LK: output features
            return [str(x) for x in (a.d, 1, 1, 1, a.lq, a.lk, 1)]
        if a.phase == "mask":  # the SparseK operator: LQ rows of LK scores, KNOB: k
            return [str(x) for x in (a.d, 1, 1, 1, a.lq, a.lk, a.topk)]
        if a.variant in ("topk", "loki", "sparsek"):  # the runner's KNOB: k, k/rank, k/window
            splits = {"topk": a.topk, "loki": f"{a.topk}/{a.rank}", "sparsek": f"{a.topk}/{a.window}"}[a.variant]
        elif a.phase == "decode":  # as runtime/src/dispatch.cpp chooses (choose_decode_splits)
            blocks = (a.lk + 255) // 256
            rows = a.b * a.h * a.lq
            if a.isa == "cuda":
                splits = max(1, min((1024 + rows - 1) // rows, blocks))
            else:
                splits = max(1, min((64 * a.threads + rows - 1) // rows, max(1, blocks // 4)))
        return [str(x) for x in (a.d, a.b, a.h, a.hkv, a.lq, a.lk, splits)]

    def shape_name(self, s=None):
        return "x".join(self.shape_args(s))

    def kernel_id(self, s=None):
        """The tuned kernel and shape: the cache keys' prefix, and an export's identity."""
        a = self.a
        return f"{table_variant(a)}/{a.phase}/{a.mask}/d{a.d}/{a.isa}/{self.shape_name(s)}"

    def point_id(self, t, s=None):
        return f"{self.kernel_id(s)}/{key_of(t)}"

    def compile(self, t, name, flags=(), params=()):
        out = os.path.join(self.work, name)
        os.makedirs(out, exist_ok=True)
        causal = self.a.mask == "causal"
        tunables = dict(t)
        if tunables.pop("wrong", 0):  # --inject-wrong: the other mask's kernel, a wrong answer
            causal = not causal
        kernel = []  # the generator's own params: topk_ffn has no phase, mask or head dim
        if not unkeyed(self.a.variant, self.a.phase):
            kernel = [f"phase={self.a.phase}", f"causal={'true' if causal else 'false'}",
                      f"head_dim={self.a.d}"]
        if self.a.variant == "dense":
            kernel.append(f"with_lse={'false' if self.a.phase == 'prefill' else 'true'}")
        cmd = [self.gen, *flags, "-g", generator_of(self.a.variant, self.a.phase), "-f", name, "-e", "object,h", "-o", out,
               f"target={self.target}{CANDIDATE_FEATURES}", *kernel,
               f"tables={os.path.join(ROOT, 'schedules')}", *([f"tunables={key_of(tunables)}"] if tunables else []),
               *DTYPE_PARAMS[self.a.dtype], *params]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            # A generator killed (e.g. out of memory) prints nothing: its exit status says so.
            return None, r.stderr.strip().splitlines()[-1:] or [f"generator exited with {r.returncode}"]
        so = self.so_path(name)
        subprocess.run([self.cxx, "-shared", "-o", so, os.path.join(out, name + ".o")], check=True)
        return so, None

    def adams_so(self):
        """Adams2019's schedule of the tuned kernel (estimates in generators/register_<variant>.cpp),
        built once and cached in the work folder: the autoscheduler is slow, so a rerun reuses it."""
        a = self.a
        name = f"adams_{table_variant(a).replace('.', '_')}_{a.phase}_{a.mask}_d{a.d}_{a.isa}"
        so = self.so_path(name)
        if os.path.exists(so):
            print(f"[autotune] Adams2019: reusing {so}", flush=True)
            return so
        import halide  # the autoscheduler plugins ship with the halide package

        pkg = os.path.dirname(halide.__file__)
        plugin = next((os.path.join(pkg, d, "libautoschedule_adams2019.so") for d in ("lib64", "lib")
                       if os.path.exists(os.path.join(pkg, d, "libautoschedule_adams2019.so"))), None)
        if plugin is None:
            raise SystemExit(f"hattn-autotune: --adams generate: no libautoschedule_adams2019.so in {pkg}")
        print(f"[autotune] Adams2019: scheduling {name} (parallelism={a.threads}); this takes "
              "minutes for decode and about an hour for prefill", flush=True)
        start = time.time()
        built, err = self.compile({}, name, flags=("-p", plugin),
                                  params=("autoscheduler=Adams2019", f"autoscheduler.parallelism={a.threads}"))
        if built is None:  # reported in the summary: a schedule that does not compile loses
            print(f"[autotune] Adams2019: its schedule does not compile: {' '.join(err)}", flush=True)
            return None
        print(f"[autotune] Adams2019: scheduled in {time.time() - start:.0f} s", flush=True)
        return built

    def export(self, points, dest):
        """Builds `points` (and the runner) into `dest` for timing on another machine, one
        that needs no Halide: dest/run.sh times every candidate, interleaved, and prints the
        lines that --import reads back."""
        os.makedirs(dest, exist_ok=True)
        shutil.copy(self.runner, os.path.join(dest, "hattn-tune-runner"))
        names = {self.cand_name(p): p for p in points}
        print(f"[autotune] export: compiling {len(names)} candidates into {dest}", flush=True)
        done = [0]

        def build(item):
            name, p = item
            so, err = self.compile(p, name)
            done[0] += 1
            if done[0] % 10 == 0 or done[0] == len(names):
                print(f"[autotune] export: {done[0]}/{len(names)} compiled", flush=True)
            return name, p, so, err

        with cf.ThreadPoolExecutor(self.a.jobs) as ex:
            built = list(ex.map(build, names.items()))
        checked = self.check_ptx(built) if self.a.isa == "cuda" else {}
        with open(os.path.join(dest, "candidates.txt"), "w") as f:
            for name, p, so, err in built:
                if so is None:
                    print(f"[autotune] export: {key_of(p)} did not compile: {err}", flush=True)
                    continue
                if checked.get(name) is False:
                    continue  # ptxas refused it: illegal on the target, not worth a slot
                shutil.copy(so, os.path.join(dest, name + ".so"))
                f.write(f"{name} {key_of(p)}\n")
        with open(os.path.join(dest, "args.txt"), "w") as f:
            mask = "true" if self.a.mask == "causal" else "false"
            f.write(" ".join([self.runner_variant(), self.a.phase, mask, *self.shape_args(), *self.runner_tail()]) + "\n")
        with open(os.path.join(dest, "point_prefix.txt"), "w") as f:
            f.write(self.kernel_id() + "\n")
        run = os.path.join(dest, "run.sh")
        with open(run, "w") as f:
            f.write(RUN_SH)
        os.chmod(run, 0o755)

    def check_ptx(self, built):
        """CUDA candidates, offline: ptxas (sm_80, the target's architecture) must assemble each
        one's PTX; registers and spills are reported. Returns {name: assembles}."""
        sys.path.insert(0, os.path.join(ROOT, "scripts"))
        import check_ptx  # scripts/check_ptx.py: the build's own PTX check

        ptxas = check_ptx.find_ptxas(None)
        if ptxas is None:
            print("[autotune] export: no ptxas (CUDA toolkit): the PTX is not checked here", flush=True)
            return {}
        result, most_regs, spilling = {}, 0, 0
        for name, p, so, _ in built:
            if so is None:
                continue
            obj = os.path.join(self.work, name, name + ".o")
            ptxs = check_ptx.ptx_in_bytes(open(obj, "rb").read())
            ok, regs, spills = bool(ptxs), 0, 0
            for n, ptx in enumerate(ptxs):
                path = os.path.join(self.work, name, f"{name}.{n}.ptx")
                open(path, "w").write(ptx)
                good, funcs, log = check_ptx.run_ptxas(ptxas, path, "sm_80")
                ok = ok and good
                for fn in funcs.values():
                    regs, spills = max(regs, fn["regs"]), spills + fn["spill_st"] + fn["spill_ld"]
            result[name] = ok
            if not ok:
                print(f"[autotune] export: {key_of(p)}: ptxas refused its PTX; left out", flush=True)
            most_regs, spilling = max(most_regs, regs), spilling + (spills > 0)
        print(f"[autotune] export: ptxas sm_80 assembled {sum(result.values())}/{len(result)}; "
              f"{spilling} of them spill; most registers {most_regs}", flush=True)
        return result

    def import_results(self, src):
        """Reads src/results.txt (the output of src/run.sh) into the cache: a point's time is
        the median of its rounds; a point wrong or failing in any round is recorded so."""
        names = dict(l.split() for l in open(os.path.join(src, "candidates.txt")) if l.strip())
        prefix = open(os.path.join(src, "point_prefix.txt")).read().strip()
        if prefix != self.kernel_id():
            raise SystemExit(f"hattn-autotune: --import {src}: exported for {prefix}, but this run is "
                             f"{self.kernel_id()} (give the same kernel and shape options)")
        rounds = {}
        for line in open(os.path.join(src, "results.txt")):
            f = line.split()
            if len(f) >= 2 and f[0] in names:
                rounds.setdefault(f[0], []).append(f[1:])
        for name, key in names.items():
            res = [parse_runner_line(r) for r in rounds.get(name, [])]
            bad = [r for r in res if r["status"] != "ok"]
            if not res:
                r = {"status": "not_timed"}
            elif bad:
                r = bad[0]
            else:
                ms = sorted(x["median_ms"] for x in res)
                r = {"status": "ok", "median_ms": ms[len(ms) // 2], "rounds": len(ms)}
            self.cache[f"{prefix}/{key}"] = r
        json.dump(self.cache, open(self.cache_path, "w"), indent=1)
        return {key: self.cache[f"{prefix}/{key}"] for key in names.values()}

    def cand_name(self, t):
        """The candidate's function name and folder: the kernel it is (variant, phase, mask, head dim,
        ISA: what the compile depends on) and its tunables, e.g.
        c_topk_prefill_causal_d128_avx512_kb256_qb16_tk6_tq2. Points of different kernels with the
        same tunables must not share a folder: re-timing one would run the other's code."""
        a = self.a
        kernel = f"{table_variant(a).replace('.', '_')}_{a.phase}_{a.mask}_d{a.d}_{a.isa}"
        return f"c_{kernel}_" + key_of(t).replace(":", "").replace(",", "_")

    def so_path(self, name):
        """The shared object of candidate `name`. Its name carries the calling convention, so that
        one built by an older tuner (without user_context) in the same work folder is never
        reused: the runner would refuse it."""
        return os.path.join(self.work, name, name + ".user_context.so")

    def runner_variant(self):
        """The runner's VARIANT: the generator's name, with the dtype for 16-bit kernels."""
        return with_dtype(generator_of(self.a.variant, self.a.phase), self.a)

    def runner_tail(self):
        return [str(self.a.reps), "20261202", "cuda" if self.a.isa == "cuda" else "cpu"]

    def time_so(self, so, name, s=None):
        cmd = [self.runner, so, name, self.runner_variant(), self.a.phase,
               "true" if self.a.mask == "causal" else "false", *self.shape_args(s),
               *self.runner_tail()]
        env = dict(os.environ, HL_NUM_THREADS=str(self.a.threads))
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        except subprocess.TimeoutExpired:
            return {"status": "timeout"}
        line = (r.stdout.strip().splitlines() or ["error no output"])[-1]
        res = parse_runner_line(line.split())
        if r.returncode != 0 and res["status"] == "ok":
            res["status"] = "error"
        return res

    def measure(self, points):
        """Measures the uncached points at every shape (compiling each once, in parallel)."""
        todo = [p for p in points if self.shapes_to_time(p)]
        with cf.ThreadPoolExecutor(self.a.jobs) as ex:
            built = list(ex.map(lambda p: self.compile(p, self.cand_name(p)), todo))
        for p, (so, err) in zip(todo, built):
            if time.time() > self.deadline:
                break
            for s in self.shapes_to_time(p):
                res = ({"status": "compile_error", "why": err} if so is None
                       else self.time_so(so, self.cand_name(p), s))
                res["runner"] = self.runner_id
                self.cache[self.point_id(p, s)] = res
                json.dump(self.cache, open(self.cache_path, "w"), indent=1)
                if res["status"] != "ok":  # wrong or failing at one shape: not worth the others
                    break
            self.done += 1

    def shapes_to_time(self, p):
        """The shapes `p` still needs timing at: none once it failed at one (by this runner)."""
        if any(r.get("status") != "ok" and r.get("runner") == self.runner_id
               for r in (self.cache.get(self.point_id(p, s), {}) for s in self.shapes)):
            return []
        return [s for s in self.shapes if self.stale(self.point_id(p, s))]

    def stale(self, pid):
        """True if the point must be measured: not cached, or a failure another runner judged."""
        r = self.cache.get(pid)
        return r is None or (r.get("status") != "ok" and r.get("runner") != self.runner_id)

    def shape_ms(self, t, s):
        r = self.cache.get(self.point_id(t, s))
        return r["median_ms"] if r and r["status"] == "ok" else float("inf")

    def score(self, t):
        """The point's time (several shapes: the geometric mean); inf unless ok at every one."""
        ms = [self.shape_ms(t, s) for s in self.shapes]
        return float("inf") if float("inf") in ms else geomean(ms)

    def status(self, t):
        """Why a point has no score: the first shape's failure, or `not timed`."""
        for s in self.shapes:
            r = self.cache.get(self.point_id(t, s), {"status": "not timed"})
            if r["status"] != "ok":
                return r["status"]
        return "ok"

    def measure_chunked(self, points, label=None):
        """As measure, a few points at a time, so the budget is checked between compiles; with
        a label, a progress line after each chunk (a long phase is otherwise silent)."""
        step = 2 * self.a.jobs
        for i in range(0, len(points), step):
            if time.time() > self.deadline:
                break
            self.measure(points[i:i + step])
            if label:
                best = min(points[:i + step], key=self.score)
                print(f"[autotune] {label}: {min(i + step, len(points))}/{len(points)}, best "
                      f"{key_of(best)} {self.score(best):.2f} ms, "
                      f"{max(0, self.deadline - time.time()):.0f} s left", flush=True)

    def tile_moves(self, best):
        """Joint moves over the micro-tile (tq, tk, td): one tunable at a time cannot leave a
        tile that fills the registers (raising tq needs a lower tk first)."""
        space = SPACE[self.a.phase]
        if "tk" not in space:  # el: its three tiles are independent, coordinate descent suffices
            return []
        moves = []
        for tq, tk, td in itertools.product(space.get("tq", [None]), space["tk"], space.get("td", [None])):
            t = dict(best, tk=tk, **({"tq": tq} if tq else {}), **({"td": td} if td else {}))
            if tq and self.a.phase == "prefill" and t["qb"] % (tq * self.vec) != 0:
                fits = [q for q in space["qb"] if q % (tq * self.vec) == 0 and q >= best["qb"]]
                if not fits:
                    continue
                t["qb"] = fits[0]
            if legal(self.a.phase, t, self.vec, self.regs, self.a.d, self.a.variant) and t != best:
                moves.append(t)
        # Tiles that use more of the register file first: they are the usual winners.
        moves.sort(key=lambda t: -(t.get("tq", 1) * max(t["tk"], t.get("td", 0))))
        return moves

    def confirm(self, points, rounds=3):
        """Re-times the given points interleaved, `rounds` times each at each shape, and returns
        {key: [median of the rounds' medians, per shape]}: one timing per point is noise for a
        memory-bound kernel."""
        # A point measured by an earlier run (in the cache) may have no .so here any more.
        missing = [p for p in points if not os.path.exists(self.so_path(self.cand_name(p)))]
        with cf.ThreadPoolExecutor(self.a.jobs) as ex:
            list(ex.map(lambda p: self.compile(p, self.cand_name(p)), missing))
        per_shape = {}
        for n, s in enumerate(self.shapes):
            if len(self.shapes) > 1:
                print(f"[autotune] shape {n + 1}/{len(self.shapes)}: {self.shape_name(s)}", flush=True)
            got = self.confirm_shape(points, rounds, s)
            for k, ms in got.items():
                per_shape.setdefault(k, []).append(ms)
        return per_shape

    def confirm_shape(self, points, rounds, s):
        runs = {key_of(p): [] for p in points}
        for _ in range(rounds):
            for p in points:
                r = self.time_so(self.so_path(self.cand_name(p)), self.cand_name(p), s)
                if r["status"] == "ok":
                    runs[key_of(p)].append(r["median_ms"])
        confirmed = {k: sorted(v)[len(v) // 2] if v else float("inf") for k, v in runs.items()}
        for k, v in runs.items():
            print(f"[autotune] re-timed {k}: median {confirmed[k]:.2f} ms of rounds "
                  f"{', '.join(f'{x:.2f}' for x in v) or 'none ok'}", flush=True)
        return confirmed

    def finalists(self, hand, count=3):
        """The best `count` points of this kernel measured at every shape, plus the hand-tuned one."""
        prefix = self.kernel_id(self.shapes[0])
        points = [parse_key(k[len(prefix) + 1:]) for k, r in self.cache.items()
                  if k.startswith(prefix + "/") and r.get("status") == "ok"]
        scored = sorted((self.score(p), key_of(p)) for p in points)
        best = [parse_key(k) for ms, k in scored[:count] if ms < float("inf")]
        return best + ([hand] if hand not in best else [])

    def search(self, seed):
        if self.a.inject_wrong:
            # A candidate that computes the other mask (less work when the tuned one is
            # non-causal): the runner's reference check must mark it wrong, or it would win.
            wrong = dict(seed, wrong=1)
            self.measure([wrong])
            print(f"[autotune] injected wrong candidate {key_of(wrong)}: "
                  f"{self.status(wrong)}", flush=True)
        best = self.descend(dict(seed))
        if time.time() < self.deadline:
            moves = self.tile_moves(best)
            print(f"[autotune] coordinate descent converged; trying {len(moves)} micro-tiles", flush=True)
            self.measure_chunked(moves, "micro-tiles")
            for t in moves:
                if self.score(t) < self.score(best) * 0.99:
                    best = t
            best = self.descend(best)
        return best

    def descend(self, seed):
        space = SPACE[self.a.phase]
        best = dict(seed)
        self.measure([best])
        total = sum(1 for v in itertools.product(*space.values())
                    if legal(self.a.phase, dict(zip(space, v)), self.vec, self.regs, self.a.d, self.a.variant))
        improved, shown = True, -1
        while improved and time.time() < self.deadline:
            improved = False
            for name, values in space.items():
                cur = best[name]
                order = sorted(values, key=lambda v: abs(values.index(v) - values.index(cur))
                               if cur in values else 0)
                cands = []
                for v in order:
                    t = dict(best, **{name: v})
                    if v != cur and legal(self.a.phase, t, self.vec, self.regs, self.a.d, self.a.variant):
                        cands.append(t)
                self.measure_chunked(cands)
                for t in cands:
                    if self.score(t) < self.score(best) * 0.99:  # 1%: below that is noise
                        best, improved = t, True
                left = max(0, self.deadline - time.time())
                if self.done != shown:  # a line per step that measured something (no repeats)
                    shown = self.done
                    print(f"[autotune] {self.done} measured ({total} legal points), best "
                          f"{key_of(best)} {self.score(best):.2f} ms, {left:.0f} s left", flush=True)
                if time.time() > self.deadline:
                    break
        return best


def table_file(isa):
    """The table a target reads, relative to a schedules/ folder."""
    return os.path.join({"cuda": "cuda", "neon": "arm"}.get(isa, "x86"), f"{isa}.table")


def table_paths(isa):
    """The tables a target's generator reads, in order: the avx512_zen4 build falls back to
    avx512's (schedules/family.cpp)."""
    isas = ["avx512_zen4", "avx512"] if isa == "avx512_zen4" else [isa]
    return [os.path.join(ROOT, "schedules", table_file(i)) for i in isas]


def read_table_line(paths, variant, phase, head="any", mask="any"):
    """The tunables of the first line matching the key, as the generator picks it
    (schedules/table.cpp): a dtype's key (dense.bf16) takes a plain `dense` line too, and a
    line's `any` matches every head dim (d64, ...) and mask."""
    names = {variant, variant.split(".")[0]}
    for path in paths:
        for line in open(path):
            f = line.split()
            if (f and not f[0].startswith("#") and f[0] in names and f[1] == phase
                    and f[2] in ("any", head) and f[3] in ("any", mask)):
                return dict((kv.split("=")[0], int(kv.split("=")[1])) for kv in f[4:])
    raise SystemExit(f"hattn-autotune: no '{variant} {phase}' line in {', '.join(paths)}")


def write_table(a, best, times, where=None):
    """Writes the winner as a line for exactly the tuned key (variant, phase, dD, mask), before the
    general lines (the first match wins), into out_dir: a copy of src_dir made on the first run
    and edited in place afterwards, so tuning one kernel keeps the lines tuned before."""
    src_dir, out_dir, phase, variant = os.path.join(ROOT, "schedules"), a.out, a.phase, table_variant(a)
    if not os.path.isdir(out_dir):
        shutil.copytree(src_dir, out_dir)
    path = os.path.join(out_dir, table_file(a.isa))
    lines = open(path).read().splitlines()
    where = where or f"{platform.node()} ({cpu_model()}, {a.threads} thread{'s' if a.threads != 1 else ''})"
    stamp = f"# autotuned {datetime.date.today()} on {where}: {times}"
    head = table_head(a)
    key = [variant, phase, head, a.mask]
    # Every tunable of the line: the searched ones, then those held at the table's values.
    names = [n for n in SPACE[phase] if n in best] + sorted(n for n in best if n not in SPACE[phase])
    new = f"{variant:<9} {phase:<8} {head:<7} {a.mask:<9} " + " ".join(f"{n}={best[n]}" for n in names)
    fields = [line.split()[:4] for line in lines]
    if key in fields:  # retuned: replace the line and the stamp above it
        i = fields.index(key)
        first = i - 1 if i > 0 and lines[i - 1].startswith("# autotuned") else i
        lines[first:i + 1] = [stamp, new]
    else:
        # Before the first line that would match the key (a dtype's key: its plain lines too).
        i = next((i for i, f in enumerate(fields)
                  if f[:2] in ([variant, phase], [a.variant, phase])), len(lines))
        lines[i:i] = [stamp, new]
    open(path, "w").write("\n".join(lines) + "\n")
    return path


def all_legal_points(t):
    space = SPACE[t.a.phase]
    pts = [dict(zip(space, v)) for v in itertools.product(*space.values())]
    return [p for p in pts if legal(t.a.phase, p, t.vec, t.regs, t.a.d, t.a.variant)]


def export_all(t, a, hand, seed):
    """Step 1 of tuning another machine: the candidates, built here."""
    points = all_legal_points(t)
    for p in (hand, seed):
        if p not in points:
            points.append(p)
    if a.inject_wrong:
        points.append(dict(seed, wrong=1))
    if len(points) > a.max_export:
        raise SystemExit(f"hattn-autotune: --export: {len(points)} legal points is more than "
                         f"--max-export {a.max_export}; restrict the space with --space")
    t.export(points, os.path.abspath(a.export))
    print(f"[autotune] export: {a.export} holds the candidates for {a.variant} {a.phase} {a.mask} d{a.d} "
          f"on {a.isa}, shape {t.shape_name()}. On the target machine run\n"
          f"    {a.export}/run.sh > {a.export}/results.txt\n"
          f"  then here, with the same options, --import {a.export}", flush=True)
    return 0


def import_and_report(t, a, hand, seed):
    """Step 2: the target's timings in, the winner's line out."""
    got = t.import_results(os.path.abspath(a.import_dir))
    ok = {k: r["median_ms"] for k, r in got.items() if r["status"] == "ok"}
    counts = {}
    for r in got.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(f"[autotune] import: {len(got)} candidates: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), flush=True)
    for k, r in got.items():
        if r["status"] == "wrong":
            print(f"[autotune] import: {k} is wrong (rel_err {r.get('rel_err')}): never a winner", flush=True)
    if not ok:
        whys = sorted({str(r.get("why", r["status"])) for r in got.values()})
        raise SystemExit(f"hattn-autotune: --import: no candidate ran correctly on the target "
                         f"({'; '.join(whys)[:300]})")
    best_key = min(ok, key=ok.get)
    best = parse_key(best_key)
    hand_ms, seed_ms = ok.get(key_of(hand), float("inf")), ok.get(key_of(seed), float("inf"))
    print("\n| kernel, shape | seed ms | hand-tuned table ms | tuned ms | tuned / hand |")
    print(f"| {a.variant} {a.phase} {a.mask} d{a.d}, {t.shape_name()} | {seed_ms:.3f} | "
          f"{hand_ms:.3f} | {ok[best_key]:.3f} | {hand_ms / ok[best_key]:.3f} speed |")
    where = f"the --export target ({len(ok)} candidates timed, medians of their rounds)"
    print(f"[autotune] winner {best_key}; table written to "
          f"{write_table(a, best, f'{ok[best_key]:.2f} ms (seed {fmt_ms(seed_ms)})', where)}")
    return 0


# The fields --shapes may set (each variant reads those of its default shape, set_default_shape).
SHAPE_FIELDS = ("b", "h", "hkv", "lq", "lk", "topk", "rank", "window", "beam")


def set_default_shape(a):
    """The shape each variant is tuned at unless told: a prefill of 2048 (sparsek 4096) rows of 8
    heads, or a GQA decode step over 32K keys; topk_ffn a 512-token batch of a 768 x 3072 FFN;
    el one generation step of 4 samples x a beam of 4 over 1024 hidden states of 1024 (16 heads);
    linear 1024 rows of 1024 -> 1024 features; the SparseK operator 2048 rows of 2048, k = 256."""
    dec = a.phase == "decode"
    if a.variant == "linear" or a.phase == "mask":
        if a.mask == "causal":
            raise SystemExit(f"hattn-autotune: {a.variant} {a.phase} has no mask: drop --mask")
        a.mask, a.b, a.h, a.hkv = "noncausal", 1, 1, 1
        if a.variant == "linear":  # the standard path's K/V projection of 1024 hidden states
            a.d, a.lq, a.lk = a.d or 1024, a.lq or 1024, a.lk or 1024
            if a.d % 16:
                raise SystemExit(f"hattn-autotune: linear: --d {a.d} (input features) must be a "
                                 "multiple of 16")
        else:  # one head of a 2048-token prefill, a row of 2048 scores per query
            a.d, a.lq, a.lk, a.topk = a.d or 1, a.lq or 2048, a.lk or 2048, a.topk or 256
            if a.topk < 1:
                raise SystemExit("hattn-autotune: sparsek mask: --topk must be >= 1")
        return
    if a.variant == "el":  # generation: B samples of a beam of 4, one new token, N states each
        a.d, a.b, a.h, a.lq, a.lk = a.d or 1024, a.b or 4, a.h or 16, a.lq or 1, a.lk or 1024
        if a.mask == "causal":
            raise SystemExit("hattn-autotune: el takes its mask at run time, so one table line "
                             "serves both; it is tuned on non-causal calls (drop --mask causal)")
        a.mask = "noncausal"
        if a.d % 16 or a.d % a.h:
            raise SystemExit(f"hattn-autotune: el: --d {a.d} must be a multiple of 16 and of --h {a.h}")
        return
    if a.variant == "topk_ffn":
        if a.mask == "causal" or a.phase != "prefill":
            raise SystemExit("hattn-autotune: topk_ffn has one kernel: no mask, no decode phase")
        a.d, a.lq, a.lk = a.d or 768, a.lq or 512, a.lk or 3072
        a.b = a.h = a.hkv = 1
        a.mask, a.topk = "noncausal", a.topk or 256
        return
    a.d, a.b = a.d or 128, a.b or 1
    if a.variant == "sparsek" and a.mask == "noncausal":
        raise SystemExit("hattn-autotune: sparsek is causal by construction")
    a.mask = a.mask or ("noncausal" if dec else "causal")
    a.h = a.h or (32 if dec else 8)
    a.hkv = a.hkv or (8 if dec else a.h)
    long = 4096 if a.variant == "sparsek" else 2048
    a.lq = a.lq or (1 if dec else long)
    a.lk = a.lk or (32768 if dec else long)
    a.topk = a.topk or {"topk": 64, "loki": max(1, a.lk // 8), "sparsek": 256}.get(a.variant, 64)
    a.rank = a.rank or max(1, a.d // 4)
    if a.variant == "loki" and not 1 <= a.rank <= a.d:
        raise SystemExit(f"hattn-autotune: --rank {a.rank}: loki needs 1 <= rank <= D ({a.d})")


def tune_all(a):
    """--variant all: every (variant, phase) of CPU_SPACES in turn, each a run of this script
    with the budget split evenly and its default shape, all writing into the same --out folder.
    A run that fails is reported and the rest go on; the exit status says whether any failed."""
    if (a.isa == "cuda" or cross_compiled(a.isa) or a.export or a.import_dir
            or a.space or a.start or a.inject_wrong or a.shapes):
        raise SystemExit("hattn-autotune: --variant all tunes this machine's CPU tables in place: it "
                         "takes no --isa cuda (nor neon off ARM), --export, --import, --space, "
                         "--start, --inject-wrong or --shapes")
    kernels = [(v, ph) for v in sorted(CPU_SPACES) for ph in CPU_SPACES[v]]
    share = parse_budget(a.budget) / len(kernels)
    passed = ["--isa", a.isa, "--threads", str(a.threads), "--reps", str(a.reps), "--jobs",
              str(a.jobs), "--budget", f"{share:.0f}s", "--build", a.build, "--work", a.work,
              "--out", a.out, *(["--cache", a.cache] if a.cache else []),
              *(["--adams", a.adams] if a.adams else []),
              *(["--halide-include", a.halide_include] if a.halide_include else [])]
    rows, failed = [], []
    for n, (variant, phase) in enumerate(kernels, 1):
        print(f"[autotune] all: {n}/{len(kernels)}: {variant} {phase}, {share:.0f} s", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--variant", variant, "--phase", phase, *passed]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(r.stdout)
        rows += [l for l in r.stdout.splitlines() if l.startswith(f"| {variant} ")]
        if r.returncode != 0:
            failed.append(f"{variant} {phase} (exit {r.returncode})")
    print("\n| kernel, shape | seed ms | hand-tuned table ms | tuned ms | tuned / hand | Adams2019 |")
    print("\n".join(rows))
    if failed:
        print(f"[autotune] all: failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


def fmt_ms(x):
    return f"{x:.2f} ms" if isinstance(x, float) else str(x)


def parse_budget(s):
    units = {"s": 1, "m": 60, "h": 3600}
    return float(s[:-1]) * units[s[-1]] if s[-1] in units else float(s)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=sorted(CPU_SPACES) + ["all"], default="dense",
                   help="the kernel to tune; all: every variant and phase, one after the other, "
                        "the budget split evenly, each with its default shape")
    p.add_argument("--phase", choices=["prefill", "decode", "mask"], default="prefill",
                   help="mask: sparsek's SparseK operator alone (the sparsek_mask kernel)")
    p.add_argument("--dtype", choices=sorted(DTYPE_PARAMS), default="f32",
                   help="the kernel's tensor dtype (dense and topk; bf16kv and f16kv: dense decode "
                        "over a 16-bit cache with fp32 q and out); its table line is keyed "
                        "variant.dtype (dense.bf16), read before the plain variant's"),
    p.add_argument("--topk", type=int, default=None,
                   help="the k of the tuned calls (default: topk 64, loki Lk/8, sparsek 256, "
                        "topk_ffn 256)")
    p.add_argument("--rank", type=int, default=None, help="loki: the approximate scores' rank (D/4)")
    p.add_argument("--window", type=int, default=256, help="sparsek: the local window w")
    p.add_argument("--beam", type=int, default=4, help="el: query rows per sample")
    p.add_argument("--isa", choices=sorted(ISAS) + ["auto"], default="auto",
                   help="the table (and Halide target) to tune; auto: the best this CPU runs")
    p.add_argument("--mask", choices=["causal", "noncausal"], default=None)
    p.add_argument("--d", type=int, default=None, help="head dim (topk_ffn: model dim); 128 (768)")
    p.add_argument("--b", type=int, default=None, help="batch (el: samples); 1 (el: 4)")
    p.add_argument("--h", type=int, default=None)
    p.add_argument("--hkv", type=int, default=None)
    p.add_argument("--lq", type=int, default=None)
    p.add_argument("--lk", type=int, default=None)
    p.add_argument("--shapes", default=None,
                   help="tune for a set of shapes, e.g. 'lq:512,lk:512;lq:8192,lk:8192' (fields "
                        "b h hkv lq lk topk rank window beam; others from the options and "
                        "defaults): the winner has the best geometric mean of its times, and the "
                        "summary has a row per shape")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--jobs", type=int, default=os.cpu_count())
    p.add_argument("--budget", default="10m", help="e.g. 90s, 10m, 1h")
    p.add_argument("--start", default=None, help="seed tunables 'qb:8,kb:64,...' (default: the table)")
    p.add_argument("--adams", default=None,
                   help="time Adams2019's schedule of the same kernel side by side: a .so built "
                        "earlier, or 'generate' to build it (cached in --work; minutes for decode, "
                        "about an hour for prefill on 2 cores)")
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--work", default=os.path.join(ROOT, "build", "autotune"))
    p.add_argument("--cache", default=None)
    p.add_argument("--out", default=os.path.join(ROOT, "build", "autotune", "schedules"))
    p.add_argument("--space", default=None,
                   help="restrict the search, e.g. 'qb:16|32,tk:2' (each value from the declared space)")
    p.add_argument("--inject-wrong", action="store_true",
                   help="also time a candidate known to be wrong (the other mask): it must never win")
    p.add_argument("--halide-include", default=None,
                   help="Halide's include folder for the runner (default: the halide Python package's)")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="build every legal point of the (--space restricted) space, the table's and "
                        "the seed into DIR with the runner and run.sh, to be timed on another "
                        "machine (e.g. one with a GPU and no Halide); nothing is timed here")
    p.add_argument("--import", dest="import_dir", default=None, metavar="DIR",
                   help="read DIR/results.txt (DIR/run.sh's output) and write the winner's table "
                        "line, with the same kernel and shape options as the --export run")
    p.add_argument("--max-export", type=int, default=400,
                   help="refuse an --export of more points than this (restrict with --space)")
    a = p.parse_args()
    if a.isa == "auto":
        a.isa = detect_isa(a)
    if a.variant == "all":
        if a.dtype != "f32":
            raise SystemExit("hattn-autotune: --variant all tunes the fp32 lines; tune a 16-bit "
                             "kernel with --variant dense or topk and --dtype")
        return tune_all(a)
    if a.dtype != "f32" and (a.variant not in ("dense", "topk") or a.isa in ("cuda", "neon")):
        raise SystemExit(f"hattn-autotune: --dtype {a.dtype}: the runner times 16-bit dense and "
                         "topk kernels on x86 (their inputs stored in the dtype); got "
                         f"--variant {a.variant} --isa {a.isa}")
    if a.isa == "avx512_zen4" and (a.variant, a.phase, a.dtype) != ("dense", "prefill", "bf16"):
        raise SystemExit("hattn-autotune: --isa avx512_zen4 is the build of dense's bf16 prefill "
                         "kernels only: give --variant dense --phase prefill --dtype bf16")
    if a.dtype.endswith("kv") and (a.variant, a.phase) != ("dense", "decode"):
        raise SystemExit(f"hattn-autotune: --dtype {a.dtype} (fp32 q and out over a 16-bit cache) "
                         "is a dense decode kernel: give --variant dense --phase decode")
    if a.variant != "dense" and a.isa == "cuda":
        raise SystemExit(f"hattn-autotune: {a.variant} has no CUDA schedule (schedules/cuda/) to tune")
    # SPACE (read by the search) becomes the declared space of the schedule being tuned.
    chosen = CUDA_SPACE if a.isa == "cuda" else CPU_SPACES[a.variant]
    chosen = {ph: dict(sp) for ph, sp in chosen.items()}
    SPACE.clear()
    SPACE.update(chosen)
    if a.phase not in SPACE:
        raise SystemExit(f"hattn-autotune: {a.variant} has no {a.phase} schedule to tune "
                         f"(phases: {', '.join(SPACE)})")
    if a.isa == "cuda":
        if a.adams:
            raise SystemExit("hattn-autotune: --adams: Adams2019 schedules CPU pipelines only")
    if cross_compiled(a.isa) and not (a.export or a.import_dir):
        raise SystemExit(f"hattn-autotune: --isa neon candidates are aarch64 code, which this "
                         f"{platform.machine()} machine cannot time: build them with --export DIR, "
                         "run DIR/run.sh on the ARM machine, then --import DIR (autotune/README.md)")
    if cross_compiled(a.isa) and a.adams:
        raise SystemExit("hattn-autotune: --adams with --isa neon: run it on the ARM machine "
                         "(its schedule is timed where it is built)")
    if a.export and a.import_dir:
        raise SystemExit("hattn-autotune: --export and --import are two steps: give one")
    if a.space:  # --space tq:1|2,tk:2: a sub-space (values must be in the declared one)
        for part in a.space.split(","):
            n, vals = part.split(":")
            vals = [int(v) for v in vals.split("|")]
            if n not in SPACE[a.phase] or not set(vals) <= set(SPACE[a.phase][n]):
                raise SystemExit(f"hattn-autotune: --space {part}: {n} must take values of "
                                 f"{SPACE[a.phase].get(n)} for {a.phase}")
            SPACE[a.phase][n] = vals
    a.budget_s = parse_budget(a.budget)
    shapes = shape_set(a)  # each from the options as given, its own defaults filled in
    a = shapes[0]
    if a.inject_wrong and a.variant in ("sparsek", "topk_ffn", "el", "linear"):
        raise SystemExit(f"hattn-autotune: --inject-wrong injects the other mask's kernel; {a.variant} "
                         "has one kernel for its masks (sparsek is causal, topk_ffn and linear have "
                         "none, el's is a run-time input): use dense, topk or loki")
    if a.inject_wrong and any(s.lq == 1 for s in shapes):
        raise SystemExit("hattn-autotune: --inject-wrong injects the other mask's kernel, which is "
                         "right when there is one query row (both masks see every key): give --lq 2 "
                         "or more")

    t = Tuner(a, shapes)
    if not os.access(t.gen, os.X_OK):
        raise SystemExit(f"hattn-autotune: no generator at {t.gen}: build hattn first (scripts/build.sh)")
    hand = read_table_line(table_paths(a.isa), table_variant(a), a.phase, table_head(a), a.mask)
    # A line may omit an optional tunable (kt, tg, tr, gd, gt): the schedule then reads its default, so
    # the search starts there too (a searched tunable missing from the seed was a KeyError).
    hand = {**{n: v for n, v in OPTIONAL_TUNABLES.items() if n in SPACE[a.phase]}, **hand}
    if "gt" in SPACE[a.phase] and "gt" not in hand:  # topk_ffn's default: its qb
        hand["gt"] = hand["qb"]
    seed = dict(hand)
    if a.start:
        for kv in a.start.split(","):
            n, v = kv.split(":")
            seed[n] = int(v)
    if a.import_dir:
        return import_and_report(t, a, hand, seed)
    t.build_runner()
    if a.export:
        return export_all(t, a, hand, seed)
    names = [t.shape_name(s) for s in shapes]
    print(f"[autotune] {table_variant(a)} {a.phase} {a.mask} d{a.d} on {a.isa}, "
          f"shape{'s' if len(shapes) > 1 else ''} {', '.join(names)}"
          + (" (scored by the geometric mean of their times)" if len(shapes) > 1 else "")
          + f", budget {a.budget_s:.0f} s, seed {key_of(seed)}", flush=True)
    best = t.search(seed)
    t.measure([hand])
    final = t.finalists(hand)
    print(f"[autotune] re-timing {len(final)} finalists interleaved (3 rounds each)", flush=True)
    confirmed = t.confirm(final)
    best = min(final, key=lambda p: geomean(confirmed[key_of(p)]))
    adams = [None] * len(shapes)
    if a.adams:
        so = t.adams_so() if a.adams == "generate" else os.path.abspath(a.adams)
        for n, s in enumerate(shapes):
            fn = os.path.basename(so).split(".")[0] if so else None  # the .so's entry point
            r = t.time_so(so, fn, s) if so else {"status": "compile_error"}
            adams[n] = r.get("median_ms") or r["status"]  # a time, or why there is none
            print(f"[autotune] Adams2019 {os.path.basename(so or 'schedule')} at {names[n]}: "
                  f"{r['status']}" + (f" {adams[n]:.2f} ms" if r.get("median_ms") else ""), flush=True)
    seeds = [t.shape_ms(seed, s) for s in shapes]
    seeds = [x if x < float("inf") else t.status(seed) for x in seeds]  # why it has no time
    hands, bests = confirmed[key_of(hand)], confirmed[key_of(best)]
    print("\n| kernel, shape | seed ms | hand-tuned table ms | tuned ms | tuned / hand" +
          (" | Adams2019 |" if a.adams else " |"))
    kernel = f"{table_variant(a)} {a.phase} {a.mask} d{a.d}"
    for n in range(len(shapes)):
        print(f"| {kernel}, {names[n]} | {fmt_ms(seeds[n])} | {hands[n]:.2f} | {bests[n]:.2f} | "
              f"{hands[n] / bests[n]:.3f} speed" + (f" | {fmt_ms(adams[n])} |" if a.adams else " |"))
    if len(shapes) > 1:
        ratios = [h / b for h, b in zip(hands, bests)]
        print(f"| {kernel}, geometric mean of {len(shapes)} shapes | - | {geomean(hands):.2f} | "
              f"{geomean(bests):.2f} | {geomean(ratios):.3f} speed" + (" | - |" if a.adams else " |"))
    print(f"[autotune] {t.done} points measured in this run, {len(t.cache)} in the cache")
    times = "; ".join(f"{bests[n]:.2f} ms (seed {fmt_ms(seeds[n])}"
                      + (f", Adams2019 {fmt_ms(adams[n])}" if a.adams else "") + ")"
                      + (f" at {names[n]}" if len(shapes) > 1 else "") for n in range(len(shapes)))
    print(f"[autotune] winner {key_of(best)}; table written to {write_table(a, best, times)}")


def shape_set(a):
    """--shapes 'lq:512,lk:512;lq:8192,lk:8192': the shapes to time, each the defaults with its
    fields replaced. The table key (variant, phase, head dim, mask) is the same for all of them,
    so one line is written for the set."""
    if not a.shapes:
        set_default_shape(a)
        return [a]
    shapes = []
    for spec in a.shapes.split(";"):
        s = copy.copy(a)
        for part in filter(None, spec.split(",")):
            if ":" not in part:
                raise SystemExit(f"hattn-autotune: --shapes: '{part}' is not name:value")
            n, v = part.split(":", 1)
            if n not in SHAPE_FIELDS:
                raise SystemExit(f"hattn-autotune: --shapes: '{n}' is not a shape field; give "
                                 f"{', '.join(SHAPE_FIELDS)} (d and mask are the table key: tune "
                                 "each head dim and mask in its own run)")
            setattr(s, n, int(v))
        set_default_shape(s)
        shapes.append(s)
    if (a.export or a.import_dir) and len(shapes) > 1:
        raise SystemExit("hattn-autotune: --export/--import take one shape: export each shape of "
                         "the set into its own folder")
    return shapes


if __name__ == "__main__":
    sys.exit(main())
