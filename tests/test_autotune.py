#!/usr/bin/env python3
"""ctest: hattn-autotune on a tiny search space (issue 8's tests).

  test_autotune.py BUILD_DIR HALIDE_INCLUDE WORK_DIR

1. A first run (4 points of dense prefill, d64, a small shape, plus an injected wrong candidate:
   the causal kernel timed as the non-causal one, which does less work and so is faster) must
   finish, mark the injected candidate `wrong`, pick a winner that is not it, and write a table
   with the tuned line and its stamp.
2. The generator must accept the written table (it parses every line) and build the tuned key
   from it.
3. A second run with the same cache must measure nothing new (it resumes from the cache).
   The same space tuned for a set of two shapes (--shapes) times every point at both, reports a
   row per shape and their geometric mean, stamps each shape's time, and resumes too.
4. Tuning another machine: --export builds the same space into a folder, its run.sh (what the
   target runs, no Halide) times it, --import reads the timings back: the injected candidate is
   recorded wrong and the winner's line is written. A CUDA export (2 decode points) must pass
   ptxas where the toolkit is installed, and its run.sh must report each candidate as an error
   with a reason, not a crash, on a machine without a GPU (on one with a GPU: ok and a time).
   An ARM export (NEON, cross-compiled) is timed under qemu-aarch64 and imported into
   arm/neon.table, which the generator then builds from.
5. The other variants (topk, loki, sparsek, topk_ffn, el, linear prefill and the SparseK
   operator, sparsek's mask phase) on 2 points each, at shapes with partial tiles, checked by the
   runner against the suite's oracle for each: an injected wrong candidate (topk and loki, which
   have a mask) is recorded wrong, a stamped line for the key is written and the generator
   builds the kernel from the written tables.
Every check prints what it found; any failure exits non-zero.
"""
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def fail(msg):
    print(f"test_autotune: FAILED: {msg}", flush=True)
    sys.exit(1)


TINY = ["--phase", "prefill", "--mask", "noncausal", "--isa", "sse41", "--d", "64",
        "--b", "1", "--h", "2", "--hkv", "2", "--lq", "256", "--lk", "256",
        "--threads", "1", "--jobs", "2", "--reps", "3",
        "--space", "qb:16,kb:64|128,tq:1,tk:2,td:2|4", "--start", "qb:16,kb:64,tq:1,tk:2,td:2",
        "--inject-wrong"]


def tuner(args, expect_rc=0):
    cmd = [sys.executable, os.path.join(ROOT, "autotune", "hattn_autotune.py"), *args]
    print("test_autotune: $ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    print(r.stdout, r.stderr, sep="\n", flush=True)
    if r.returncode != expect_rc:
        fail(f"the tuner exited with {r.returncode}, expected {expect_rc}")
    return r.stdout + r.stderr


def run_sh(folder, rounds=2, env=None):
    r = subprocess.run([os.path.join(folder, "run.sh"), str(rounds)], capture_output=True,
                       text=True, timeout=900, env=env)
    if r.returncode != 0:
        fail(f"{folder}/run.sh exited with {r.returncode}: {r.stderr}")
    open(os.path.join(folder, "results.txt"), "w").write(r.stdout)
    print(f"test_autotune: {folder}/run.sh printed\n{r.stdout}", flush=True)
    return r.stdout.splitlines()


def check_import(common, pkg, table, what):
    """--import of pkg: the injected candidate is reported wrong and does not win, and a stamped
    'dense prefill d64 noncausal' line is written into `table`; returns that table's lines."""
    text = tuner(common + ["--import", pkg])
    if "is wrong" not in text or "wrong:1" in text.split("[autotune] winner ")[1].splitlines()[0]:
        fail(f"{what}: the injected candidate was not reported wrong, or it won")
    lines = open(table).read().splitlines()
    tuned = [i for i, l in enumerate(lines) if l.split()[:4] == ["dense", "prefill", "d64", "noncausal"]]
    if len(tuned) != 1 or "--export target" not in lines[tuned[0] - 1]:
        fail(f"{what} wrote no stamped line into {table}")
    print(f"test_autotune: {what} wrote {lines[tuned[0] - 1]}\n  {lines[tuned[0]]}", flush=True)


def check_shape_set(build, inc, work):
    """3b. A set of shapes: every point is timed at each (the injected one is wrong at the
    first and not timed further), the summary has a row per shape and their geometric mean, the
    stamp gives each shape's time, and a second run resumes from the cache."""
    sw = os.path.join(work, "shapes")
    args = TINY + ["--shapes", "lq:128,lk:128;lq:200,lk:160", "--budget", "5m", "--build", build,
                   "--work", sw, "--out", os.path.join(sw, "schedules"), "--halide-include", inc]
    text = tuner(args)
    cache = json.load(open(os.path.join(sw, "cache.json")))
    for shape in ("64x1x2x2x128x128x1", "64x1x2x2x200x160x1"):
        rows = [l for l in text.splitlines() if l.startswith("| dense prefill") and shape in l]
        timed = [k for k, v in cache.items() if f"/{shape}/" in k and v["status"] == "ok"]
        if len(rows) != 1 or len(timed) < 4:
            fail(f"--shapes: shape {shape}: {len(rows)} summary rows, {len(timed)} points timed ok")
    if "geometric mean of 2 shapes" not in text:
        fail("--shapes: no geometric-mean row in the summary")
    table = open(os.path.join(sw, "schedules", "x86", "sse41.table")).read().splitlines()
    stamp = [l for l in table if l.startswith("# autotuned ")]
    if len(stamp) != 1 or "at 64x1x2x2x200x160x1" not in stamp[0]:
        fail(f"--shapes: the stamp does not give each shape's time: {stamp}")
    again = tuner(args)
    if "[autotune] 0 points measured" not in again:
        fail("--shapes: the second run measured again")
    print(f"test_autotune: --shapes wrote {stamp[0]}", flush=True)


def check_remote_arm(build, inc, work):
    """4b. An ARM export from this x86 machine: cross-compiled candidates and runner, its run.sh
    under qemu-aarch64 (the flow and the check, not ARM's speed), --import into arm/neon.table,
    and the generator builds the NEON kernel from it."""
    for tool in ("aarch64-linux-gnu-g++", "qemu-aarch64"):
        if shutil.which(tool) is None:
            fail(f"{tool} not found: scripts/setup.sh installs it (the ARM export needs it)")
    aw = os.path.join(work, "arm")
    common = ["--isa", "neon", "--mask", "noncausal", "--d", "64", "--h", "2", "--lq", "128",
              "--lk", "128", "--space", "qb:16,kb:128,tq:1,tk:2|4,td:4", "--start",
              "qb:16,kb:128,tq:1,tk:2,td:4", "--inject-wrong", "--reps", "3", "--jobs", "2",
              "--build", build, "--work", aw, "--out", os.path.join(aw, "schedules"),
              "--halide-include", inc]
    pkg = os.path.join(aw, "pkg")
    tuner(common + ["--export", pkg])
    lines = run_sh(pkg, 1, dict(os.environ, HATTN_RUNNER_WRAPPER="qemu-aarch64 -L /usr/aarch64-linux-gnu"))
    if len(lines) != 4:  # 2 points, the table's, the injected one
        fail(f"ARM run.sh under qemu printed {len(lines)} lines, expected 4")
    vout = os.path.join(aw, "schedules")
    check_import(common, pkg, os.path.join(vout, "arm", "neon.table"), "ARM --import")
    cmd = [os.path.join(build, "generators", "hattn_generators"), "-g", "dense", "-f", "accept_arm",
           "-e", "h", "-o", aw, "target=arm-64-linux-no_runtime", "phase=prefill", "causal=false",
           "head_dim=64", "with_lse=false", f"tables={vout}"]
    g = subprocess.run(cmd, capture_output=True, text=True)
    if g.returncode != 0:
        fail(f"the generator refused the ARM tables: {g.stderr.strip()}")
    print("test_autotune: the generator built a NEON kernel from the imported table", flush=True)


def check_remote(build, inc, work):
    """4. --export, the target's run.sh, --import."""
    common = TINY + ["--build", build, "--work", os.path.join(work, "remote"),
                     "--out", os.path.join(work, "remote", "schedules"), "--halide-include", inc]
    pkg = os.path.join(work, "remote", "pkg")
    tuner(common + ["--export", pkg])
    lines = run_sh(pkg)
    if len(lines) != 2 * 6:  # 4 points of the space, the table's, the injected one; 2 rounds
        fail(f"run.sh printed {len(lines)} lines, expected 12")
    check_import(common, pkg, os.path.join(work, "remote", "schedules", "x86", "sse41.table"),
                 "--import")

    cuda = ["--phase", "decode", "--isa", "cuda", "--d", "128", "--h", "4", "--hkv", "2",
            "--lk", "1024", "--jobs", "2", "--space", "tk:2|4,td:4", "--build", build,
            "--work", os.path.join(work, "cuda"), "--out", os.path.join(work, "cuda", "schedules"),
            "--halide-include", inc]
    cpkg = os.path.join(work, "cuda", "pkg")
    text = tuner(cuda + ["--export", cpkg])
    if "ptxas sm_80 assembled" not in text and "no ptxas" not in text:
        fail("the CUDA export neither checked its PTX nor said why not")
    for line in run_sh(cpkg):
        f = line.split()
        if len(f) < 3 or f[1] not in ("ok", "error"):
            fail(f"CUDA run.sh line is neither a time nor an error with a reason: {line}")
        if f[1] == "ok":
            print(f"test_autotune: a GPU is here; timed {line}", flush=True)


def check_variant(build, inc, work, gen_out, variant, args, key, gen_params, generator=None,
                  line_variant=None):
    """Tunes `variant` (the phase is key[0]) on a tiny space: an injected candidate (if asked) is
    recorded wrong, a stamped line is written for `key` (its variant field `line_variant`, e.g.
    dense.bf16 for --dtype bf16), and the generator (the variant's, unless given) builds the
    kernel from the tables."""
    generator = generator or variant
    line_variant = line_variant or variant
    vw = os.path.join(work, f"{line_variant}_{key[0]}")
    vout = os.path.join(vw, "schedules")
    text = tuner(["--variant", variant, "--phase", key[0], *args, "--build", build, "--work", vw,
                  "--out", vout, "--halide-include", inc])
    if "--inject-wrong" in args and not any(
            l.startswith("[autotune] injected wrong candidate") and l.endswith(": wrong")
            for l in text.splitlines()):
        fail(f"{variant}: the injected candidate was not recorded wrong")
    cache = json.load(open(os.path.join(vw, "cache.json")))
    if sum(1 for v in cache.values() if v["status"] == "ok") < 2:
        fail(f"{variant}: fewer than 2 candidates timed ok: {cache}")
    lines = open(os.path.join(vout, "x86", "sse41.table")).read().splitlines()
    tuned = [i for i, l in enumerate(lines) if l.split()[:4] == [line_variant, *key]]
    if len(tuned) != 1 or not lines[tuned[0] - 1].startswith("# autotuned "):
        fail(f"{variant}: no stamped '{line_variant} {' '.join(key)}' line")
    cmd = [os.path.join(build, "generators", "hattn_generators"), "-g", generator, "-f",
           f"accept_{generator}", "-e", "h", "-o", gen_out, "target=x86-64-linux-sse41-no_runtime",
           *gen_params, f"tables={vout}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"the generator refused the {generator} tables: {r.stderr.strip()}")
    print(f"test_autotune: {line_variant} wrote {lines[tuned[0]]}", flush=True)


def run_tuner(build, inc, work, out):
    return tuner(TINY + ["--budget", "5m", "--build", build, "--work", work, "--out", out,
                         "--halide-include", inc])


def main():
    build, inc, work = (os.path.abspath(x) for x in sys.argv[1:4])
    shutil.rmtree(work, ignore_errors=True)
    out = os.path.join(work, "schedules")

    # 1. First run.
    text = run_tuner(build, inc, work, out)
    cache = json.load(open(os.path.join(work, "cache.json")))
    wrong = {k: v for k, v in cache.items() if k.endswith("wrong:1") or ",wrong:1" in k}
    if len(wrong) != 1:
        fail(f"expected one injected candidate in the cache, found {list(wrong)}")
    status = next(iter(wrong.values()))["status"]
    if status != "wrong":
        fail(f"the injected wrong candidate was recorded as '{status}', not 'wrong'")
    winner = [l for l in text.splitlines() if l.startswith("[autotune] winner ")]
    if not winner or "wrong" in winner[0]:
        fail(f"winner line: {winner}")
    ok = [k for k, v in cache.items() if v["status"] == "ok"]
    if len(ok) < 4:
        fail(f"expected the 4 points of the space (and the table's) timed ok, got {ok}")
    if "| seed ms | hand-tuned table ms | tuned ms |" not in text:
        fail("no summary table")
    table = os.path.join(out, "x86", "sse41.table")
    lines = open(table).read().splitlines()
    tuned = [i for i, l in enumerate(lines) if l.split()[:4] == ["dense", "prefill", "d64", "noncausal"]]
    if len(tuned) != 1 or not lines[tuned[0] - 1].startswith("# autotuned "):
        fail(f"{table}: no stamped 'dense prefill d64 noncausal' line")
    print(f"test_autotune: wrote {lines[tuned[0] - 1]}\n  {lines[tuned[0]]}", flush=True)

    # 2. The generator accepts the written tables and builds the tuned key from them.
    gen_out = os.path.join(work, "accept")
    os.makedirs(gen_out, exist_ok=True)
    cmd = [os.path.join(build, "generators", "hattn_generators"), "-g", "dense", "-f", "accept",
           "-e", "h", "-o", gen_out, "target=x86-64-linux-sse41-no_runtime", "phase=prefill",
           "causal=false", "head_dim=64", "with_lse=false", f"tables={out}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"the generator refused the written tables: {r.stderr.strip()}")
    print("test_autotune: the generator accepted the written tables", flush=True)

    # 3. Resume: nothing new to measure.
    text = run_tuner(build, inc, work, out)
    line = [l for l in text.splitlines() if "points measured in this run" in l]
    if not line or not line[0].startswith("[autotune] 0 points measured"):
        fail(f"the second run measured again: {line}")
    lines = open(table).read().splitlines()
    if sum(1 for l in lines if l.split()[:4] == ["dense", "prefill", "d64", "noncausal"]) != 1:
        fail("the second run duplicated the tuned line")

    check_shape_set(build, inc, work)

    # 4. Another machine: export, its run.sh, import.
    check_remote(build, inc, work)
    check_remote_arm(build, inc, work)

    # 5. The other variants, each on a 2-point space, checked by the runner against the suite's
    # oracle for that variant; those with a mask also get an injected wrong candidate.
    small = ["--isa", "sse41", "--threads", "1", "--jobs", "2", "--reps", "3", "--budget", "5m"]
    attn = ["--d", "64", "--h", "2", "--lq", "256", "--lk", "256", "--topk", "16"]
    check_variant(build, inc, work, gen_out, "topk",
                  ["--mask", "noncausal", *attn, "--space", "qb:16,tq:1,tk:2|4",
                   "--start", "qb:16,kb:256,tq:1,tk:2", "--inject-wrong", *small],
                  ["prefill", "d64", "noncausal"], ["phase=prefill", "causal=false", "head_dim=64"])
    # A 16-bit kernel: inputs stored in bf16, its line keyed dense.bf16; the injected candidate
    # (the non-causal kernel, row 0 seeing 64 keys instead of 33) must fail the bf16 tolerance.
    check_variant(build, inc, work, gen_out, "dense",
                  ["--mask", "causal", "--dtype", "bf16", "--d", "64",
                   "--h", "4", "--hkv", "2", "--lq", "32", "--lk", "64",
                   "--space", "tq:1,tk:4,td:4,tr:1|2,kt:1,tg:2", "--start", "tq:1,tk:4,td:4,tr:1,kt:1,tg:2",
                   "--inject-wrong", *small],
                  ["decode", "d64", "causal"],
                  ["phase=decode", "causal=true", "head_dim=64", "dtype=bfloat16"],
                  line_variant="dense.bf16")
    check_variant(build, inc, work, gen_out, "loki",
                  ["--mask", "noncausal", *attn, "--rank", "16", "--space", "qb:16,tq:1,tk:2|4",
                   "--start", "qb:16,kb:256,tq:1,tk:2", "--inject-wrong", *small],
                  ["prefill", "d64", "noncausal"], ["phase=prefill", "causal=false", "head_dim=64"])
    check_variant(build, inc, work, gen_out, "sparsek",
                  [*attn, "--window", "16", "--space", "qb:4|8", "--start", "qb:4", *small],
                  ["prefill", "d64", "causal"], ["phase=prefill", "causal=true", "head_dim=64"])
    check_variant(build, inc, work, gen_out, "topk_ffn",
                  ["--d", "64", "--lq", "64", "--lk", "256", "--topk", "16",
                   "--space", "qb:16,tq:1,tk:2|4", "--start", "qb:16,tq:1,tk:2", *small],
                  ["prefill", "any", "noncausal"], [])
    check_variant(build, inc, work, gen_out, "el",
                  ["--d", "64", "--h", "4", "--b", "2", "--beam", "2", "--lq", "2", "--lk", "64",
                   "--space", "qb:4|8,kb:16,tj:3,tw:2,tv:2,tc:4,to:3,tn:2",
                   "--start", "qb:4,kb:16,tj:3,tw:2,tv:2,tc:4,to:3,tn:2", *small],
                  ["prefill", "any", "noncausal"], [])
    check_variant(build, inc, work, gen_out, "linear",
                  ["--d", "64", "--lq", "41", "--lk", "50", "--space", "qb:2|4,to:3,tn:2",
                   "--start", "qb:2,to:3,tn:2", *small],
                  ["prefill", "any", "noncausal"], [])
    check_variant(build, inc, work, gen_out, "sparsek",
                  ["--lq", "25", "--lk", "300", "--topk", "20", "--space", "qb:2|4,tk:2",
                   "--start", "qb:2,tk:2", *small],
                  ["mask", "any", "noncausal"], [], generator="sparsek_mask")
    print("test_autotune: passed", flush=True)


if __name__ == "__main__":
    main()
