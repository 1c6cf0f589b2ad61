#!/usr/bin/env bash
# Builds blockd and runs every test: a warnings-as-errors build, the same
# suite under AddressSanitizer + UndefinedBehaviorSanitizer, the daemon and
# FUSE tests under ThreadSanitizer, the libFuzzer targets for a short
# while, the clang-format check and the include rule
# (scripts/check-includes.sh).  Installs missing Debian packages first.
# Exit status 0 only if everything passed.
set -euo pipefail
cd "$(dirname "$0")"

scripts/deps.sh

jobs=$(nproc)

echo "== format check"
scripts/check-format.sh

echo "== include check"
scripts/check-includes.sh

echo "== build and test (-Werror)"
cmake -S . -B build -G Ninja -DBLOCKD_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build -j "$jobs" --output-on-failure --timeout 900

echo "== build and test (ASan + UBSan)"
cmake -S . -B build-asan -G Ninja -DBLOCKD_WERROR=ON -DBLOCKD_SANITIZE=ON \
	-DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	BLOCKD_SANITIZED=1 ctest --test-dir build-asan -j "$jobs" --output-on-failure --timeout 1200

echo "== daemon and FUSE tests (ThreadSanitizer)"
cmake -S . -B build-tsan -G Ninja -DBLOCKD_WERROR=ON -DBLOCKD_TSAN=ON >/dev/null
cmake --build build-tsan -j "$jobs"
# Every report goes to a file: a test whose daemon raced fails here even if
# the test itself could not tell.
reports=$PWD/build-tsan/tsan-reports
rm -rf "$reports"
mkdir -p "$reports"
status=0
TSAN_OPTIONS="log_path=$reports/report second_deadlock_stack=1" BLOCKD_SANITIZED=1 \
	ctest --test-dir build-tsan -L 'daemon|fuse' -j "$jobs" --output-on-failure --timeout 1200 ||
	status=$?
if compgen -G "$reports/report.*" >/dev/null; then
	cat "$reports"/report.*
	echo "ThreadSanitizer reported the races above"
	status=1
fi
[[ $status == 0 ]]

echo "== fuzz (libFuzzer, clang)"
CC=clang cmake -S . -B build-fuzz -G Ninja -DBLOCKD_FUZZ=ON -DBLOCKD_WERROR=ON >/dev/null
cmake --build build-fuzz -j "$jobs" --target fuzz_qcow_open fuzz_make_seeds fuzz_proto fuzz_proto_replay
ctest --test-dir build-fuzz -R '^fuzz_' --output-on-failure --timeout 600
