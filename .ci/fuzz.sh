#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the IDX, CIFAR-10 and safetensors readers and of the
# policy / budget strings the command line takes. Each target starts from the small corpus in
# Tests/Fuzz/corpus/<target> (new inputs go to a temporary folder, not the repository).
#   .ci/fuzz.sh            # 1,000,000 executions per target
#   .ci/fuzz.sh 20000      # a quick pass (CI)
# A crash, a trap, a hang (-timeout) or an allocation over 512 MiB (-malloc_limit_mb: a header
# claiming terabytes must be refused before anything is allocated) fails the run; libFuzzer
# leaves the input that did it as crash-* / oom-* / timeout-* in the working folder.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1000000}"
# AddressSanitizer too: memory errors are reported, and its allocator enforces -malloc_limit_mb
swift build --package-path Tests/Fuzz -c release --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING
bin=.build-fuzz/release/remat-fuzz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in idx-images idx-labels cifar safetensors policy; do
    mkdir -p "$work/$target"
    echo "fuzz: $target, $runs executions"
    if ! REMAT_FUZZ_TARGET=$target "$bin" -runs="$runs" -max_len=8192 -timeout=10 -malloc_limit_mb=512 -rss_limit_mb=2048 \
        -print_final_stats=1 "$work/$target" "Tests/Fuzz/corpus/$target" >"$work/$target.log" 2>&1; then
        tail -40 "$work/$target.log"
        echo "fuzz: $target failed"
        exit 1
    fi
    grep -E "^stat::number_of_executed_units|^Done" "$work/$target.log"
done
echo "fuzz: all targets clean"
