#!/usr/bin/env bash
# Soak: 2,000 training steps of resnet20 with overlapped sqrt(n) checkpointing, the resident
# memory sampled at every step; then a shorter run of the same under AddressSanitizer's
# LeakSanitizer. Fails if RSS grows more than 1 % after warm-up or a leak is reported.
#   .ci/soak.sh            # 2,000 steps (a few minutes on 2 cores), then 100 under LSan
#   .ci/soak.sh 400 30     # shorter (CI): two epochs of warm-up, two measured
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-2000}"; leak_steps="${2:-100}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
swift build -c release --product remat
# batch 32 of 3,200 images: 100 steps an epoch
epochs=$(( (steps + 99) / 100 ))
.build/release/remat train --model resnet20 --batch 32 --train-size 3200 --test-size 64 --epochs "$epochs" \
    --policy sqrt --overlap --no-tuning --metrics "$work/soak.jsonl" >"$work/soak.log"
python3 - "$work/soak.jsonl" "$steps" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"step"' in l]
rss = [r["rss_mib"] for r in rows][: int(sys.argv[2])]
# warm-up: a tenth, and at least two epochs with their evaluations (on a loaded machine the
# heap settled only in the second epoch once: a one-time rise of 3.4 MiB there, flat after)
warm = min(len(rss) - 1, max(len(rss) // 10, 201))
base, top = rss[warm - 1], max(rss[warm:])
print(f"soak: {len(rss)} steps, RSS after warm-up {base:.1f} MiB, highest after {top:.1f} MiB ({100 * (top / base - 1):+.2f} %)")
sys.exit(0 if top <= 1.01 * base else 1)
PY
# LeakSanitizer: the same run, shorter, in the ASan build sanitize.sh address makes (the same
# flags, so after it nothing is rebuilt; leaks are reported at exit)
swift build --product remat $(.ci/asan-flags)
export LSAN_OPTIONS="suppressions=$PWD/.ci/lsan.supp:${LSAN_OPTIONS:-}"
.build-asan/debug/remat train --model resnet20 --batch 32 --train-size $(( leak_steps * 32 )) --test-size 64 --epochs 1 \
    --policy sqrt --overlap --no-tuning >"$work/leak.log" 2>&1 || { tail -40 "$work/leak.log"; echo "soak: LeakSanitizer failed"; exit 1; }
echo "soak: $leak_steps steps under LeakSanitizer, no leak reported"
