#!/usr/bin/env python3
"""Side-by-side kernel benchmark: Remat's kernels against NumPy's OpenBLAS (GEMM) and
PyTorch's CPU convolutions (oneDNN), in one run, at 1 and 2 threads.

    swift build -c release --package-path Benchmarks --product kernel-bench
    python3 Benchmarks/peers/compare_kernels.py [--threads 1 2] [--repeats 7] [--torch PYTHON]
        [--only gemm|conv] [--model NAME] [--isa avx2]

Our figures come from the kernel-bench executable (--json); each peer runs in its own
process so its thread count and environment are its own. OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are removed for the NumPy process only (they slow a current OpenBLAS).
Prints Markdown tables: GFLOP/s, ratio ours/peer and the fraction of the measured FMA peak.
--isa avx2 holds Remat and PyTorch to AVX2 and FMA (REMAT_ISA; ATEN_CPU_CAPABILITY and
ONEDNN_MAX_CPU_ISA), as compare_training.py does; NumPy keeps OpenBLAS's own choice.
"""
import argparse, json, os, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_BIN = os.path.join(HERE, "..", ".build", "release", "kernel-bench")


def warm_up(fn, seconds=1.0):
    """A new thread team runs slowly for its first ~0.1 s while the OS places its threads;
    both sides get a second of work before anything is timed."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()


def median_seconds(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---- peer processes (run as: compare_kernels.py --peer numpy|torch THREADS REPEATS < shapes)

def peer_numpy(threads, repeats, shapes):
    # the thread count comes from OPENBLAS_NUM_THREADS, set by the driver for this process
    import numpy as np
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    label = f"numpy {np.__version__} {config.get('name')} {config.get('version')}"
    try:  # which kernel OpenBLAS picked, where threadpoolctl is installed
        from threadpoolctl import threadpool_info
        info = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
        if info:
            label += f" ({info[0]['architecture']} kernel, {info[0]['num_threads']} threads)"
    except ImportError:
        pass
    rng = np.random.default_rng(1)
    w = rng.uniform(-1, 1, (512, 512)).astype(np.float32)
    warm_up(lambda: w @ w)
    for s in shapes:
        a = rng.uniform(-1, 1, (s["M"], s["K"])).astype(np.float32)
        b = rng.uniform(-1, 1, (s["K"], s["N"])).astype(np.float32)
        c = np.empty((s["M"], s["N"]), np.float32)
        t = median_seconds(lambda: np.matmul(a, b, out=c), repeats)
        print(json.dumps({"name": s["name"], "seconds": t, "peer": label}), flush=True)


def peer_torch(threads, repeats, shapes):
    import torch
    torch.set_num_threads(threads)
    label = f"torch {torch.__version__} (mkldnn={torch.backends.mkldnn.is_available()})"
    g = torch.Generator().manual_seed(1)
    w = torch.rand(512, 512, generator=g)
    warm_up(lambda: w @ w)
    for s in shapes:
        x = torch.rand(64, s["C"], s["H"], s["H"], generator=g) * 2 - 1
        w = torch.rand(s["K"], s["C"], s["R"], s["R"], generator=g) * 2 - 1
        b = torch.rand(s["K"], generator=g)
        st, pd = [s["stride"]] * 2, [s["pad"]] * 2
        with torch.no_grad():
            y = torch.nn.functional.conv2d(x, w, b, st, pd)
            dy = torch.rand_like(y)
            conv_bwd = torch.ops.aten.convolution_backward
            fwd = median_seconds(lambda: torch.nn.functional.conv2d(x, w, b, st, pd), repeats)
            bd = median_seconds(lambda: conv_bwd(dy, x, w, [s["K"]], st, pd, [1, 1], False, [0, 0], 1,
                                                 [True, False, False]), repeats)
            bw = median_seconds(lambda: conv_bwd(dy, x, w, [s["K"]], st, pd, [1, 1], False, [0, 0], 1,
                                                 [False, True, True]), repeats)
        print(json.dumps({"name": s["model"] + " " + s["name"], "forward": fwd, "backward_data": bd,
                          "backward_weights": bw, "peer": label}), flush=True)


# ---- driver

def run_ours(kind, threads, repeats, env, model=None):
    out = subprocess.run([BENCH_BIN, "--json", "--only", kind, "--threads", str(threads), "--repeats", str(repeats)]
                         + (["--model", model] if model else []),
                         check=True, capture_output=True, text=True, env=env).stdout
    return [r for r in (json.loads(l) for l in out.splitlines() if l.strip()) if r["kind"] == kind]


def run_peer(kind, python, threads, repeats, shapes, env):
    out = subprocess.run([python, os.path.abspath(__file__), "--peer", kind, str(threads), str(repeats)],
                         input=json.dumps(shapes), check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(l) for l in out.splitlines() if l.strip()]


def peak(threads, env):
    return run_ours("peak", threads, 1, env)[0]["gflops"]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        kind, threads, repeats = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        shapes = json.loads(sys.stdin.read())
        (peer_numpy if kind == "numpy" else peer_torch)(threads, repeats, shapes)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--numpy", default=sys.executable, help="python with numpy")
    ap.add_argument("--torch", default=os.environ.get("TORCH_PYTHON", "/opt/torchenv/bin/python"),
                    help="python with torch (a venv outside the repository)")
    ap.add_argument("--only", choices=["gemm", "conv"])
    ap.add_argument("--model", help="only this model's conv layers")
    ap.add_argument("--isa", choices=["avx2"], help="hold Remat and PyTorch to this instruction set")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.isa:
        env.update(REMAT_ISA=args.isa, ATEN_CPU_CAPABILITY=args.isa, ONEDNN_MAX_CPU_ISA=args.isa.upper())
    if not os.path.exists(BENCH_BIN):
        sys.exit(f"missing {BENCH_BIN}: run  swift build -c release --package-path Benchmarks --product kernel-bench")
    np_env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    for t in args.threads:
        pk = peak(t, env)
        print(f"\n## {t} thread(s): measured FMA peak {pk:.0f} GFLOP/s\n")
        if args.only in (None, "gemm"):
            ours = run_ours("gemm", t, args.repeats, env)
            np_env["OPENBLAS_NUM_THREADS"] = str(t)
            theirs = {r["name"]: r for r in run_peer("numpy", args.numpy, t, args.repeats, ours, np_env)}
            print(f"SGEMM vs {next(iter(theirs.values()))['peer']} (ours: {ours[0]['isa']})\n")
            print("| shape | M x N x K | Remat GFLOP/s | NumPy GFLOP/s | ratio | Remat % of peak |")
            print("|---|---|---:|---:|---:|---:|")
            for r in ours:
                p = theirs[r["name"]]
                flops = 2.0 * r["M"] * r["N"] * r["K"]
                g_ours, g_peer = flops / r["seconds"] / 1e9, flops / p["seconds"] / 1e9
                print(f"| {r['name']} | {r['M']}x{r['N']}x{r['K']} | {g_ours:.0f} | {g_peer:.0f} | "
                      f"{g_ours / g_peer:.2f} | {100 * g_ours / pk:.0f}% |")
        if args.only in (None, "conv"):
            ours = run_ours("conv", t, args.repeats, env, args.model)
            theirs = {r["name"]: r for r in run_peer("torch", args.torch, t, args.repeats, ours, env)}
            print(f"\nConv2d at batch 64 vs {next(iter(theirs.values()))['peer']}\n")
            print("| layer | x count | pass | Remat algo | Remat GFLOP/s | PyTorch GFLOP/s | ratio | Remat % of peak |")
            print("|---|---:|---|---|---:|---:|---:|---:|")
            totals = {}
            for r in ours:
                p = theirs[r["model"] + " " + r["name"]]
                for i, pas in enumerate(("forward", "backward_data", "backward_weights")):
                    go, gp = r["flops"] / r[pas] / 1e9, r["flops"] / p[pas] / 1e9
                    print(f"| {r['model']} {r['name']} | {r['count']} | {pas} | {r['algos'][i]} | {go:.0f} | {gp:.0f} | "
                          f"{go / gp:.2f} | {100 * go / pk:.0f}% |")
                    tot = totals.setdefault(r["model"], [0.0, 0.0])
                    tot[0] += r["count"] * r[pas]
                    tot[1] += r["count"] * p[pas]
            print("\nTotal conv time of one training step (every layer x its count, all three passes):\n")
            for m, (a, b) in totals.items():
                print(f"- {m}: Remat {a * 1e3:.1f} ms, PyTorch {b * 1e3:.1f} ms, speed ratio {b / a:.2f}")


if __name__ == "__main__":
    main()
