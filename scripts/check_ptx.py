#!/usr/bin/env python3
"""Extracts the PTX of every CUDA kernel library and checks it with ptxas, offline.

Halide embeds each pipeline's PTX in the object file as a NUL-terminated string starting at
".version". This script pulls it out of lib<kernel>.a, assembles it with ptxas for each
requested architecture and reports registers, spills and shared memory per GPU function.
Exit status: 0 if every kernel assembles for every architecture, 1 otherwise, 2 on bad usage.

  scripts/check_ptx.py [--build build] [--arch sm_80,sm_90] [--ptxas PATH] [--out DIR]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile


def find_ptxas(explicit):
    for cand in [explicit, shutil.which("ptxas"), "/usr/local/cuda/bin/ptxas"]:
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def extract_ptx(lib):
    """Returns the PTX strings embedded in the members of static library `lib`."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["ar", "x", os.path.abspath(lib)], cwd=tmp, check=True)
        found = []
        for member in sorted(os.listdir(tmp)):
            found += ptx_in_bytes(open(os.path.join(tmp, member), "rb").read())
        return found


def ptx_in_bytes(data):
    """The PTX strings embedded in one object file's bytes (also used by hattn-autotune)."""
    found = []
    start = data.find(b"\n.version")
    while start >= 0:
        end = data.find(b"\0", start)
        found.append(data[start + 1:end].decode("ascii", "replace"))
        start = data.find(b"\n.version", end)
    return found


def run_ptxas(ptxas, ptx_path, arch):
    """Returns (ok, {function: {regs, spill_st, spill_ld, smem}}, log)."""
    r = subprocess.run([ptxas, "-v", f"-arch={arch}", ptx_path, "-o", os.devnull],
                       capture_output=True, text=True)
    log = r.stdout + r.stderr
    funcs, current = {}, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            current = m.group(1)
            funcs[current] = {"regs": 0, "spill_st": 0, "spill_ld": 0, "smem": 0}
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            funcs[current]["spill_st"], funcs[current]["spill_ld"] = int(m.group(1)), int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            funcs[current]["regs"] = int(m.group(1))
        m = re.search(r"(\d+) bytes smem", line)
        if m:
            funcs[current]["smem"] = int(m.group(1))
    return r.returncode == 0, funcs, log


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="hattn build folder (default: build)")
    ap.add_argument("--arch", default="sm_80,sm_90", help="comma-separated ptxas architectures")
    ap.add_argument("--ptxas", default=None, help="ptxas to use (default: PATH, /usr/local/cuda)")
    ap.add_argument("--out", default=None, help="also write each kernel's .ptx here")
    a = ap.parse_args()

    ptxas = find_ptxas(a.ptxas)
    if ptxas is None:
        print("check_ptx: ptxas not found (install the CUDA toolkit or pass --ptxas)", file=sys.stderr)
        return 2
    libs = sorted(glob.glob(os.path.join(a.build, "generators", "lib*_cuda.a")))
    if not libs:
        print(f"check_ptx: no CUDA kernel libraries under {a.build}/generators "
              "(configure with -DHATTN_CUDA=ON and build first)", file=sys.stderr)
        return 2
    archs = [x for x in a.arch.split(",") if x]
    out_dir = a.out or tempfile.mkdtemp(prefix="hattn_ptx_")
    os.makedirs(out_dir, exist_ok=True)

    failures = 0
    print(f"ptxas: {ptxas}; {len(libs)} CUDA kernels; architectures {', '.join(archs)}")
    print(f"{'kernel':44} {'arch':6} {'gpu function':34} {'regs':>5} {'spill st/ld':>12} {'static smem':>11}")
    for lib in libs:
        kernel = os.path.basename(lib)[3:-2]
        ptxs = extract_ptx(lib)
        if not ptxs:
            print(f"{kernel:44} no PTX found in {lib}")
            failures += 1
            continue
        for n, ptx in enumerate(ptxs):
            path = os.path.join(out_dir, f"{kernel}{'' if n == 0 else '.' + str(n)}.ptx")
            with open(path, "w") as f:
                f.write(ptx)
            for arch in archs:
                ok, funcs, log = run_ptxas(ptxas, path, arch)
                if not ok:
                    failures += 1
                    print(f"{kernel:44} {arch:6} FAILED\n{log}")
                    continue
                for fn, s in sorted(funcs.items()):
                    short = re.sub(r"^_?kernel_", "", fn)[:34]
                    spill = f"{s['spill_st']}/{s['spill_ld']}"
                    flag = "  <- spills" if s["spill_st"] or s["spill_ld"] else ""
                    print(f"{kernel:44} {arch:6} {short:34} {s['regs']:5} {spill:>12} {s['smem']:11}{flag}")
    print(f"PTX written to {out_dir}")
    if failures:
        print(f"check_ptx: {failures} failure(s)", file=sys.stderr)
        return 1
    print("check_ptx: every CUDA kernel assembles for " + ", ".join(archs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
