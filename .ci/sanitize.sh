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
    # the small models (a conv-pool-fc chain, BasicBlocks, dropout): every kind of block and
    # hand-off, at a fraction of the time of all of them
    REMAT_TEST_MODELS="${REMAT_TEST_MODELS:-lenet5 resnet20 dropout-net}" \
        swift test --sanitize=thread --scratch-path .build-tsan --filter "CheckpointTests|DeterminismTests|memoryLimitPaces|budgetsRunWithinThemselves" ;;
address)
    export LSAN_OPTIONS="suppressions=$PWD/.ci/lsan.supp:${LSAN_OPTIONS:-}"
    # all but the one-epoch Fashion-MNIST run (60,000 images through kernels that the other
    # tests run under ASan too) and the memory-limit tests (ASan's shadow memory and
    # quarantine are resident too, so no limit a plain build meets holds); the parameterised
    # model tests over the small models, as under TSan
    REMAT_TEST_MODELS="${REMAT_TEST_MODELS:-lenet5 resnet20 dropout-net}" \
        swift test $(.ci/asan-flags) --skip "lenetLearnsFashionMNIST|MemoryLimitTests" ;;
*)
    echo "usage: .ci/sanitize.sh thread|address" >&2
    exit 2 ;;
esac
