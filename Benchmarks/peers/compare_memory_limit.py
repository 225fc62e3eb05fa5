#!/usr/bin/env python3
"""Training in a fixed amount of memory: Remat's `--memory` against PyTorch.

Remat: `remat bench --memory LIMIT` (the fastest plan whose predicted peak RSS of the whole
process fits) and, where the machine holds it, the unchecked step, each in a process of its
own. PyTorch: its unchecked step and checkpoint_sequential(use_reentrant=False) at each
segment count given, each in a process of its own, with its peak RSS (ru_maxrss); the count
whose peak comes closest to the limit is marked.

    swift build -c release --product remat
    python3 Benchmarks/peers/compare_memory_limit.py [--model resnet56] [--batch 1024] [--memory 1GiB]
"""
import argparse, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
REMAT = os.path.join(HERE, "..", "..", ".build", "release", "remat")


def mib(text):
    units = {"gib": 1024, "mib": 1, "kib": 1 / 1024}
    for suffix, scale in units.items():
        if text.lower().endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text) / 2**20


def remat(args):
    out = subprocess.run([REMAT, "bench", "--json", "--no-tuning", "--overlap", "off"] + args,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip().splitlines()[0] if out.stderr.strip() else "failed"
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")], None


def torch_step(model, batch, threads, steps, segments):
    code = ("import json, sys; sys.path.insert(0, %r); from torch_models import time_steps; "
            "print(json.dumps(time_steps(%r, %d, %d, %d, 1, %d)))" % (HERE, model, batch, threads, steps, segments))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet56")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--memory", default="1GiB")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--segments", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--no-unchecked", action="store_true", help="skip the unchecked runs (a machine without room for them)")
    a = p.parse_args()
    limit = mib(a.memory)
    common = ["--model", a.model, "--batch", str(a.batch), "--threads", str(a.threads), "--steps", str(a.steps), "--warmup", "1"]
    print(f"{a.model}, batch {a.batch}, {a.threads} threads, limit {a.memory} ({limit:.0f} MiB)")
    print("side     configuration                    step s   peak RSS MiB  predicted MiB")
    fitted, err = remat(common + ["--memory", a.memory, "--policies", "none"])
    for r in fitted or []:
        print(f"Remat    {r['policy'] + ' (--memory)':32} {r['step_seconds_median']:7.2f}   {r['peak_rss_mib']:12.0f}  "
              f"{r['predicted_peak_rss_mib'] or 0:13.0f}")
    if err:
        print(f"Remat    --memory {a.memory}: {err}")
    if not a.no_unchecked:
        unchecked, err = remat(common + ["--policies", "none"])
        for r in unchecked or []:
            print(f"Remat    {'none':32} {r['step_seconds_median']:7.2f}   {r['peak_rss_mib']:12.0f}")
    rows = []
    for segments in ([] if a.no_unchecked else [1]) + a.segments:
        r = torch_step(a.model, a.batch, a.threads, a.steps, segments)
        if r is None:
            print(f"PyTorch  {segments} segment(s): failed")
            continue
        rows.append((segments, r))
    closest = min((s for s, _ in rows if s > 1), key=lambda s: abs(dict(rows)[s]["peak_rss_mib"] - limit), default=None)
    for segments, r in rows:
        name = "none" if segments == 1 else f"checkpoint_sequential, {segments} segm."
        mark = "  <- closest to the limit" if segments == closest else ""
        print(f"PyTorch  {name:32} {r['step_seconds_median']:7.2f}   {r['peak_rss_mib']:12.0f}{mark}")


if __name__ == "__main__":
    main()
