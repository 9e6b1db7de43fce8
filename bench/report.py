"""Prints hattn's benchmark table: medians from Google Benchmark JSON (and the PyTorch peer's),
ratios against the baselines measured in the same run, and each issue target met or missed."""
import json
import sys


def load(paths):
    rows = {}
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            print(f"report.py: skipping {path}: {e}", file=sys.stderr)
            continue
        for b in data.get("benchmarks", []):
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
                continue
            name = b.get("run_name", b["name"]).replace("/real_time", "")
            name = name.replace("_median", "")
            if b.get("error_occurred"):
                continue
            rows[name] = b
    return rows


def val(rows, name, key):
    b = rows.get(name)
    if b is None:
        return None
    if key == "ms":
        unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
        return b["real_time"] * unit
    v = b.get(key)
    return float(v) if v is not None else None


def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "MISSED")


# A GEMM below this fraction of the measured FMA peak at a large square shape is a library
# misconfigured for this CPU (Debian's OpenBLAS picked a slow core type on a Xeon: 30 GFLOP/s
# where torch.matmul ran 216-246); ratios against it would flatter hattn.
GEMM_FLOOR = 0.5


def machine_section(rows):
    """The machine's FMA peak and how near it each GEMM library runs; returns the libraries whose
    GEMM is trustworthy here (a subset of 'openblas', 'torch') and the peak."""
    peak = val(rows, "machine_peak/fma/threads:2", "GFLOP/s")
    peak1 = val(rows, "machine_peak/fma/threads:1", "GFLOP/s")
    print("Machine (fp32 FMA peak measured in this run; GEMM at M = N = K = 2048)")
    print(f"  FMA peak: {fmt(peak)} GFLOP/s with 2 threads, {fmt(peak1)} with 1")
    good = []
    for lib, name in (("openblas", "openblas_sgemm/square/N:2048"),
                      ("torch", "torch_matmul/square/N:2048")):
        g = val(rows, name, "GFLOP/s")
        if g is None:
            print(f"  {lib}: not measured")
            continue
        frac = ratio(g, peak)
        ok = frac is None or frac >= GEMM_FLOOR
        note = "" if ok else (f"  <- BELOW {GEMM_FLOOR:.0%} of the peak: misconfigured for this CPU;"
                              " its ratios below are not meaningful")
        print(f"  {lib} sgemm: {fmt(g)} GFLOP/s = {fmt(None if frac is None else frac * 100)}% "
              f"of the peak{note}")
        if ok:
            good.append(lib)
    return good, peak


def best_gemm(rows, good, tail):
    """The faster trustworthy GEMM library at one shape (name tail '/L:../D:..'), or None."""
    rates = []
    if "openblas" in good:
        rates.append(val(rows, "openblas_sgemm/" + tail, "GFLOP/s"))
    if "torch" in good:
        rates.append(val(rows, "torch_matmul/" + tail, "GFLOP/s"))
    rates = [r for r in rates if r is not None]
    return max(rates) if rates else None


def dtype_section(rows, targets):
    """Dense attention on bf16 and f16 tensors next to fp32 and PyTorch SDPA in the same dtype."""
    if not any(k.startswith("hattn_dense_bf16") or k.startswith("hattn_dense_f16") for k in rows):
        return
    print("\n16-bit dense (ms; medians; torch = PyTorch SDPA in the same dtype)")
    print(f"  {'shape':<32}{'f32':>8}{'bf16':>8}{'torch':>8}{'x':>6}{'f16':>8}{'torch':>8}{'x':>6}")
    tails = [f"decode/Lk:{lk}/D:128" for lk in (4096, 32768, 131072)]
    tails += [f"prefill/L:2048/D:{d}/causal:{c}" for d in (64, 128) for c in (0, 1)]
    for tail in tails:
        f32 = val(rows, f"hattn_dense/{tail}", "ms")
        cells = []
        for dt in ("bf16", "f16"):
            h = val(rows, f"hattn_dense_{dt}/{tail}", "ms")
            t = val(rows, f"torch_sdpa_{dt}/{tail}", "ms")
            cells.append(f"{fmt(h, '.2f'):>8}{fmt(t, '.2f'):>8}{fmt(ratio(t, h), '.2f'):>6}")
        if f32 is None and all("-" in c for c in cells):
            continue
        print(f"  {tail:<32}{fmt(f32, '.2f'):>8}{''.join(cells)}")
        if tail == "decode/Lk:32768/D:128":
            r = ratio(f32, val(rows, f"hattn_dense_bf16/{tail}", "ms"))
            targets.append((f"bf16 decode Lk=32K >= 1.8x fp32 decode ({fmt(r, '.2f')}x)",
                            None if r is None else r >= 1.8))
    # fp32 q and out over a 16-bit cache (engines' layout), next to the all-16-bit call.
    for tail in ("decode/Lk:32768/D:128", "decode/Lk:32768/D:128/Hkv:8"):
        for dt in ("bf16", "f16"):
            kv = val(rows, f"hattn_dense_{dt}kv/{tail}", "ms")
            if kv is not None:
                same = val(rows, f"hattn_dense_{dt}/{tail}", "ms")
                print(f"  {tail:<32} fp32 q/out over a {dt} cache: {fmt(kv, '.2f')} ms "
                      f"({fmt(ratio(kv, same), '.2f')}x the all-{dt} call)")


def gqa_section(rows, targets):
    """Grouped-query decode (Hq = 32, Hkv = 8) against MHA (Hq = Hkv = 32) at the same Lk."""
    if not any(k.endswith("/Hkv:8") for k in rows):
        return
    print("\nGQA decode, Hq=32 over Hkv=8 vs MHA Hq=Hkv=32, D=128 (time GQA / time MHA; ideal 0.25;"
          " torch = PyTorch SDPA with enable_gqa, same dtype)")
    for lk in (4096, 32768):
        for dt in ("", "_bf16", "_f16"):
            mha = val(rows, f"hattn_dense{dt}/decode/Lk:{lk}/D:128", "ms")
            gqa = val(rows, f"hattn_dense{dt}/decode/Lk:{lk}/D:128/Hkv:8", "ms")
            gbs = val(rows, f"hattn_dense{dt}/decode/Lk:{lk}/D:128/Hkv:8", "GB/s")
            torch = val(rows, f"torch_sdpa{dt}/decode/Lk:{lk}/D:128/Hkv:8", "ms")
            r = ratio(gqa, mha)
            name = dt[1:] or "f32"
            print(f"  Lk={lk:<6} {name:<5} {fmt(gqa, '.2f')} ms vs {fmt(mha, '.2f')} ms -> "
                  f"{fmt(r, '.2f')}x, {fmt(gbs)} GB/s; torch {fmt(torch, '.2f')} ms "
                  f"({fmt(ratio(torch, gqa), '.2f')}x)")
            if lk == 32768:
                targets.append((f"GQA decode Lk=32K {name} <= 0.3x MHA ({fmt(r, '.2f')}x)",
                                None if r is None else r <= 0.3))
    # The sparse variants on the same grouped cache, against dense there (fp32).
    dense_gqa = val(rows, "hattn_dense/decode/Lk:32768/D:128/Hkv:8", "ms")
    for name, row in (("topk k=64", "hattn_topk/decode/Lk:32768/D:128/k:64/Hkv:8"),
                      ("Loki (1/4, 1/8)", "hattn_loki/decode/Lk:32768/D:128/df:1/4/kf:1/8/Hkv:8"),
                      ("Loki (1/4, 1/4)", "hattn_loki/decode/Lk:32768/D:128/df:1/4/kf:1/4/Hkv:8")):
        t = val(rows, row, "ms")
        if t is not None:
            print(f"  Lk=32768  f32   {name}: {fmt(t, '.2f')} ms, {fmt(ratio(t, dense_gqa), '.2f')}x "
                  "the dense GQA time")


def topk_section(rows, targets):
    """topk vs dense in the same run (time ratios), and topk_ffn vs the best dense FFN."""
    if not any(k.startswith("hattn_topk") for k in rows):
        return
    print("\ntopk vs dense (time topk / time dense; medians; scratch = most scratch held at once)")
    for l in (2048, 8192):
        dense = val(rows, f"hattn_dense/prefill/L:{l}/D:64/causal:0", "ms")
        for k in (32, 64, 128):
            name = f"hattn_topk/prefill/L:{l}/D:64/k:{k}"
            t = val(rows, name, "ms")
            r = ratio(t, dense)
            print(f"  prefill L={l} D=64 k={k}: {fmt(t)} ms vs {fmt(dense)} ms -> "
                  f"{fmt(r, '.2f')}x, scratch {fmt(val(rows, name, 'scratch_MB'), '.1f')} MB")
            if l == 8192 and k == 64:
                targets.append((f"topk prefill L=8192 k=64 <= 1.15x dense ({fmt(r, '.2f')}x)",
                                None if r is None else r <= 1.15))
    for lk in (32768, 131072):
        # Each dtype against dense decode in the same dtype (a 16-bit cache for both).
        for dt in ("", "_bf16", "_f16"):
            dense = val(rows, f"hattn_dense{dt}/decode/Lk:{lk}/D:128", "ms")
            t = val(rows, f"hattn_topk{dt}/decode/Lk:{lk}/D:128/k:64", "ms")
            if t is None:
                continue
            r = ratio(t, dense)
            name = dt[1:] or "f32"
            print(f"  decode Lk={lk} D=128 k=64 {name:<4}: {fmt(t)} ms vs {fmt(dense)} ms -> "
                  f"{fmt(r, '.2f')}x")
            if lk == 32768:
                targets.append((f"topk decode Lk=32K k=64 {name} <= 0.55x dense "
                                f"({fmt(r, '.2f')}x)", None if r is None else r <= 0.55))
    for d, ff, ks in ((768, 3072, (256, 384)), (1024, 16384, (512, 2048))):
        shape = f"/T:512/D:{d}/dff:{ff}"
        # The best dense FFN of this run: OpenBLAS, or PyTorch's when bench/torch_sdpa.py ran.
        peers = {n: val(rows, f"{n}_ffn" + shape, "ms") for n in ("openblas", "torch")}
        peers = {n: t for n, t in peers.items() if t is not None}
        best = min(peers, key=peers.get) if peers else None
        base = peers.get(best)
        label = {"openblas": "OpenBLAS", "torch": "PyTorch"}.get(best, "a dense FFN")
        for k in ks:
            t = val(rows, f"hattn_topk_ffn{shape}/k:{k}", "ms")
            sp = ratio(base, t)
            others = ", ".join(f"{n} {fmt(v)} ms" for n, v in sorted(peers.items()))
            print(f"  ffn D={d} d_ff={ff} k={k}: {fmt(t)} ms vs {label} {fmt(base)} ms -> "
                  f"{fmt(sp, '.2f')}x faster (dense FFNs: {others or 'none'})")
            if k == ff // 8:
                targets.append((f"topk_ffn d_ff={ff} k=d_ff/8 >= 1.3x faster than {label} "
                                f"({fmt(sp, '.2f')}x)", None if sp is None else sp >= 1.3))
            t16 = val(rows, f"hattn_topk_ffn_bf16{shape}/k:{k}", "ms")
            if t16 is not None:
                b16 = val(rows, "torch_ffn_bf16" + shape, "ms")
                print(f"    bf16 x and weights: {fmt(t16)} ms -> {fmt(ratio(base, t16), '.2f')}x "
                      f"{label} fp32, {fmt(ratio(t, t16), '.2f')}x hattn fp32"
                      + (f", {fmt(ratio(b16, t16), '.2f')}x PyTorch bf16" if b16 else ""))


def loki_section(rows, targets):
    """Loki decode vs dense decode at each (d_f, k_f), next to the byte model's ratio."""
    if not any(k.startswith("hattn_loki") for k in rows):
        return
    print("\nLoki decode vs dense decode (B=1, H=32, D=128; speedup = time dense / time loki)")
    print(f"  {'Lk':<8}{'d_f':>5}{'k_f':>5}{'loki ms':>9}{'dense ms':>9}{'speedup':>8}"
          f"{'bound':>7}{'GB/s':>7}")
    for lk in (4096, 32768, 131072):
        dense = val(rows, f"hattn_dense/decode/Lk:{lk}/D:128", "ms")
        for df in ("1/8", "1/4", "1/2"):
            for kf in ("1/8", "1/4", "1/2"):
                name = f"hattn_loki/decode/Lk:{lk}/D:128/df:{df}/kf:{kf}"
                t = val(rows, name, "ms")
                if t is None:
                    continue
                model = val(rows, name, "model_bytes_vs_dense")
                sp = ratio(dense, t)
                bound = None if not model else 1 / model
                print(f"  {lk:<8}{df:>5}{kf:>5}{fmt(t):>9}{fmt(dense):>9}{fmt(sp, '.2f'):>8}"
                      f"{fmt(bound, '.2f'):>7}{fmt(val(rows, name, 'GB/s')):>7}")
                strided = val(rows, name.replace("hattn_loki/", "hattn_loki_strided/"), "ms")
                if strided is not None:
                    print(f"  {'':<8}{'':>5}{'':>5}{fmt(strided):>9}  <- the same without k_lead "
                          f"(strided leading channels): {fmt(ratio(dense, strided), '.2f')}x")
                floors = [val(rows, f"loki_part/decode/Lk:{lk}/D:128/df:{df}/kf:{kf}/bound/pf:{p}",
                              "ms") for p in (0, 8)]
                floors = [f for f in floors if f is not None]
                if floors:
                    floor = min(floors)
                    print(f"  {'':<8}{'':>5}{'':>5}{fmt(floor):>9}  <- the same bytes read by plain "
                          f"loops (loki_part/.../bound): at most {fmt(ratio(dense, floor), '.2f')}x "
                          f"dense on this machine; Loki at {fmt(ratio(floor, t), '.2f')} of it")
                if lk == 32768 and (df, kf) == ("1/4", "1/8"):
                    targets.append((f"loki decode Lk=32K d_f=1/4 k_f=1/8 >= 3.2x dense "
                                    f"({fmt(sp, '.2f')}x)", None if sp is None else sp >= 3.2))
                if lk == 32768 and (df, kf) == ("1/4", "1/4"):
                    targets.append((f"loki decode Lk=32K d_f=k_f=1/4 >= 2x dense "
                                    f"({fmt(sp, '.2f')}x)", None if sp is None else sp >= 2.0))
    # Over a 16-bit cache, against dense decode in the same dtype.
    for dt in ("bf16", "f16"):
        dense = val(rows, f"hattn_dense_{dt}/decode/Lk:32768/D:128", "ms")
        for kf in ("1/8", "1/4"):
            name = f"hattn_loki_{dt}/decode/Lk:32768/D:128/df:1/4/kf:{kf}"
            t = val(rows, name, "ms")
            if t is None:
                continue
            model = val(rows, name, "model_bytes_vs_dense")
            bound = None if not model else 1 / model
            print(f"  {'32768':<8}{'1/4':>5}{kf:>5}{fmt(t):>9}{fmt(dense):>9}"
                  f"{fmt(ratio(dense, t), '.2f'):>8}{fmt(bound, '.2f'):>7}"
                  f"{fmt(val(rows, name, 'GB/s')):>7}  <- {dt} (vs dense {dt})")


def el_section(rows, targets):
    """EL decode step vs the standard path (bench/bench_el.cpp)."""
    if not any(k.startswith("hattn_el/") for k in rows):
        return
    print("\nEL-attention decode step (T=1, N=1024) vs the standard path; medians")
    print(f"  {'shape':<20}{'EL ms':>9}{'cached ms':>10}{'EL/cached':>10}{'nocache ms':>11}"
          f"{'nocache/EL':>11}{'core GF/s':>10}{'step GF/s':>10}{'GEMM GF/s':>10}{'x':>6}"
          f"{'MB/sample EL|std':>18}")
    for model in ("bart_large", "gpt2_small"):
        for bb in ("1x1", "8x4", "32x4"):
            s = f"{model}/{bb}"
            el = val(rows, f"hattn_el/{s}", "ms")
            if el is None:
                continue
            cached = val(rows, f"hattn_mha_cached/{s}", "ms")
            nocache = val(rows, f"hattn_mha_nocache/{s}", "ms")
            core = val(rows, f"hattn_el/{s}", "core_GFLOPs")
            step = val(rows, f"hattn_el/{s}", "step_GFLOPs")
            # The best GEMM at the core's shape: OpenBLAS, or torch.matmul when the peer ran.
            gemms = [val(rows, f"{lib}/el_core/{s}", "GFLOPs")
                     for lib in ("openblas_sgemm", "torch_matmul")]
            gemms = [g for g in gemms if g is not None]
            sg = max(gemms) if gemms else None
            mb_el = val(rows, f"hattn_el/{s}", "cache_MB_per_sample")
            mb_std = val(rows, f"hattn_mha_cached/{s}", "cache_MB_per_sample")
            print(f"  {s:<20}{fmt(el, '.2f'):>9}{fmt(cached, '.2f'):>10}"
                  f"{fmt(ratio(el, cached), '.2f'):>10}{fmt(nocache, '.1f'):>11}"
                  f"{fmt(ratio(nocache, el), '.1f'):>11}{fmt(core):>10}{fmt(step):>10}"
                  f"{fmt(sg):>10}{fmt(ratio(core, sg), '.2f'):>6}{fmt(mb_el, '.1f'):>9}|"
                  f"{fmt(mb_std, '.1f')}")
            r = ratio(core, sg)
            targets.append((f"EL core {s} >= 0.85 of the best GEMM's GFLOP/s (lower bound "
                            f"{fmt(r, '.2f')}; the whole step {fmt(ratio(step, sg), '.2f')})",
                            None if r is None else r >= 0.85))
            if model == "bart_large":
                n = ratio(nocache, el)
                targets.append((f"EL {s} >= 5x faster than the uncached standard path "
                                f"({fmt(n, '.1f')}x)", None if n is None else n >= 5))


def main():
    rows = load(sys.argv[1:])
    good, peak = machine_section(rows)
    lengths = [l for l in (512, 2048, 8192, 16384)
               if f"hattn_dense/prefill/L:{l}/D:64/causal:0" in rows]
    print("\nPrefill, B=1, H=8, fp32 (GFLOP/s of visible work; medians; 'gemm' = the faster "
          "trustworthy library's sgemm at each GEMM shape)")
    print(f"{'shape':<26}{'hattn':>8}{'%peak':>6}{'oblas':>8}{'x':>6}{'gemm qk':>9}{'gemm pv':>9}"
          f"{'x min':>7}{'torch':>8}{'x':>6}")
    targets = []
    for d in (64, 128):
        for l in lengths:
            for c in (0, 1):
                tail = f"prefill/L:{l}/D:{d}/causal:{c}"
                h = val(rows, f"hattn_dense/{tail}", "GFLOP/s")
                o = val(rows, f"openblas_attention/{tail}", "GFLOP/s")
                t = val(rows, f"torch_sdpa/{tail}", "GFLOP/s")
                qk = best_gemm(rows, good, f"qk/L:{l}/D:{d}")
                pv = best_gemm(rows, good, f"pv/L:{l}/D:{d}")
                sg = None if qk is None or pv is None else max(qk, pv)
                pk = ratio(h, peak)
                print(f"{'L=%d D=%d %s' % (l, d, 'causal' if c else 'full'):<26}{fmt(h):>8}"
                      f"{fmt(None if pk is None else pk * 100, '.0f'):>6}"
                      f"{fmt(o):>8}{fmt(ratio(h, o), '.2f'):>6}{fmt(qk):>9}{fmt(pv):>9}"
                      f"{fmt(ratio(h, sg), '.2f'):>7}{fmt(t):>8}{fmt(ratio(h, t), '.2f'):>6}")
                if l == 2048 and c == 0:
                    targets.append((f"L=2048 D={d}: hattn >= the best sgemm at both GEMM shapes",
                                    None if sg is None or h is None else h >= sg))
                    # Against OpenBLAS attention only where OpenBLAS itself runs near the peak.
                    ob = ratio(h, o) if "openblas" in good else None
                    targets.append((f"L=2048 D={d}: hattn >= 1.25x OpenBLAS attention "
                                    f"({fmt(ob, '.2f')}x"
                                    f"{'' if 'openblas' in good else '; OpenBLAS below the peak'})",
                                    None if ob is None else ob >= 1.25))
                    targets.append((f"L=2048 D={d}: hattn faster than torch SDPA "
                                    f"({fmt(ratio(h, t), '.2f')}x)",
                                    None if ratio(h, t) is None else ratio(h, t) > 1.0))
    print("\nCausal speedup (time non-causal / time causal)")
    for d in (64, 128):
        for l in lengths:
            full = val(rows, f"hattn_dense/prefill/L:{l}/D:{d}/causal:0", "ms")
            causal = val(rows, f"hattn_dense/prefill/L:{l}/D:{d}/causal:1", "ms")
            s = ratio(full, causal)
            print(f"  L={l} D={d}: {fmt(s, '.2f')}x")
            if l == 2048:
                targets.append((f"causal speedup L=2048 D={d} >= 1.85 ({fmt(s, '.2f')}x)",
                                None if s is None else s >= 1.85))
    print("\nGFLOP/s spread across L (non-causal)")
    for d in (64, 128):
        g = [val(rows, f"hattn_dense/prefill/L:{l}/D:{d}/causal:0", "GFLOP/s") for l in lengths]
        g = [x for x in g if x is not None]
        if g:
            spread = max(g) / min(g) - 1
            print(f"  D={d}: {' '.join(fmt(x) for x in g)}  spread {spread * 100:.1f}%")
            targets.append((f"D={d} GFLOP/s within 10% across L ({spread * 100:.1f}%)",
                            spread <= 0.10))
    bw = val(rows, "array_read/threads:2", "GB/s")
    bw1 = val(rows, "array_read/threads:1", "GB/s")
    print(f"\nDecode, B=1, H=32, D=128, Lq=1 (GB/s of q, k, v, out; medians)")
    print(f"  array read: {fmt(bw)} GB/s with 2 threads, {fmt(bw1)} with 1")
    print(f"  {'Lk':<8}{'hattn':>8}{'x read':>8}{'oblas':>8}{'x':>6}{'torch':>8}{'x':>6}")
    for lk in (4096, 32768, 131072):
        tail = f"decode/Lk:{lk}/D:128"
        h = val(rows, f"hattn_dense/{tail}", "GB/s")
        o = val(rows, f"openblas_attention/{tail}", "GB/s")
        t = val(rows, f"torch_sdpa/{tail}", "GB/s")
        if h is None:
            continue
        r = ratio(h, bw)
        print(f"  {lk:<8}{fmt(h):>8}{fmt(r, '.2f'):>8}{fmt(o):>8}{fmt(ratio(h, o), '.2f'):>6}"
              f"{fmt(t):>8}{fmt(ratio(h, t), '.2f'):>6}")
        if lk == 32768:
            targets.append((f"decode Lk=32768 at >= 0.90 of the 2-thread array read ({fmt(r, '.2f')})",
                            None if r is None else r >= 0.90))
    dtype_section(rows, targets)
    gqa_section(rows, targets)
    topk_section(rows, targets)
    loki_section(rows, targets)
    el_section(rows, targets)
    if not any(k.startswith("torch_sdpa/") for k in rows):
        print("\n(PyTorch SDPA peer not measured: torch columns are empty)")
    print("\nTargets")
    for text, ok in targets:
        print(f"  [{verdict(ok)}] {text}")


if __name__ == "__main__":
    main()
