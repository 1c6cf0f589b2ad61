#!/bin/bash
# image convert -p draws a progress bar on stderr that ends at 100%;
# without -p and without a terminal it prints nothing.
. "$(dirname "$0")/lib.sh"

head -c $((8 << 20)) /dev/urandom >src.raw
blockctl image convert -p src.raw with.qcow2 2>progress.err
grep -q '100.00%' progress.err || fail "no 100% in: $(cat progress.err)"
blockctl image convert src.raw without.qcow2 2>quiet.err
[[ ! -s quiet.err ]] || fail "output without -p: $(cat quiet.err)"
