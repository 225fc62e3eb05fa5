#!/usr/bin/env bash
# Soak: 2,000 training steps of resnet20 with overlapped sqrt(n) checkpointing, the resident
# memory sampled at every step; then a shorter run of the same under AddressSanitizer's
# LeakSanitizer. Fails if RSS grows more than 1 % after warm-up or a leak is reported.
#   .ci/soak.sh            # 2,000 steps (a few minutes on 2 cores), then 100 under LSan
#   .ci/soak.sh 300 50     # shorter (CI)
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
warm = min(len(rss) - 1, max(len(rss) // 10, 101))  # warm-up: a tenth, and at least an epoch and its evaluation
base, top = rss[warm - 1], max(rss[warm:])
print(f"soak: {len(rss)} steps, RSS after warm-up {base:.1f} MiB, highest after {top:.1f} MiB ({100 * (top / base - 1):+.2f} %)")
sys.exit(0 if top <= 1.01 * base else 1)
PY
# LeakSanitizer: the same run, shorter, in an ASan build (leaks are reported at exit)
swift build --product remat --sanitize=address --scratch-path .build-asan
export LSAN_OPTIONS="suppressions=$PWD/.ci/lsan.supp:${LSAN_OPTIONS:-}"
.build-asan/debug/remat train --model resnet20 --batch 32 --train-size $(( leak_steps * 32 )) --test-size 64 --epochs 1 \
    --policy sqrt --overlap --no-tuning >"$work/leak.log" 2>&1 || { tail -40 "$work/leak.log"; echo "soak: LeakSanitizer failed"; exit 1; }
echo "soak: $leak_steps steps under LeakSanitizer, no leak reported"
