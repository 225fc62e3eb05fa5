#!/usr/bin/env bash
# Runs tests under a sanitizer, in its own build folder.
#   .ci/sanitize.sh thread    # ThreadSanitizer: the checkpointing (overlap) and determinism tests
#   .ci/sanitize.sh address   # AddressSanitizer (Swift and C) + UndefinedBehaviorSanitizer (the C
#                                 # kernels; Swift's own checks trap on overflow anyway): the whole suite
# Exit status: the test run's; any sanitizer report makes the run fail.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
thread)
    swift test --sanitize=thread --scratch-path .build-tsan --filter "CheckpointTests|DeterminismTests|memoryLimitPaces|budgetsRunWithinThemselves" ;;
address)
    # swiftc on Linux takes no -sanitize=undefined: UBSan goes to the C target through clang,
    # its handlers come with the AddressSanitizer runtime
    export LSAN_OPTIONS="suppressions=$PWD/.ci/lsan.supp:${LSAN_OPTIONS:-}"
    swift test --sanitize=address --scratch-path .build-asan \
        -Xcc -fsanitize=undefined -Xcc -fno-sanitize-recover=undefined ;;
*)
    echo "usage: .ci/sanitize.sh thread|address" >&2
    exit 2 ;;
esac
