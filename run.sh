#!/usr/bin/env bash
# Builds blockd, blockctl and blockfs (installing missing Debian packages first) and
# runs the daemon in the foreground.  Arguments go to blockd; without any it
# uses its defaults: data directory /var/lib/blockd as root (else
# ~/.local/state/blockd), NBD on 127.0.0.1:10809 and DIR/nbd.sock.
set -euo pipefail
cd "$(dirname "$0")"

scripts/deps.sh
cmake -S . -B build -G Ninja >/dev/null
cmake --build build --target blockd blockctl blockfs >/dev/null
exec build/blockd/blockd "$@"
