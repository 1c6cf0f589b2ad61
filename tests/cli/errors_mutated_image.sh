#!/bin/bash
# No damaged image crashes or hangs a command: bytes of a qcow2 image are
# overwritten at random (fixed seed, so a failure can be replayed) and
# every command must end with status 0 or 1 and at most one error line.
. "$(dirname "$0")/lib.sh"
need qemu-io

STEP_TIMEOUT=20
SEED=${SEED:-20240611}
RANDOM=$SEED
qimg create -q -f qcow2 -o cluster_size=4096 base.qcow2 8M
qimg create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 good.qcow2 16M
qio -c 'write -P 1 0 100k' -c 'write -z 1M 64k' -c 'write -P 3 5M 8k' good.qcow2 >/dev/null
size=$(stat -c %s good.qcow2)

poke() { # poke FILE OFFSET: one random byte at OFFSET
	# shellcheck disable=SC2059 # the format is the byte to write
	printf "\\x$(printf %02x $((RANDOM % 256)))" |
		dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

for i in $(seq 1 100); do
	cp good.qcow2 bad.qcow2
	for _ in 1 2 3; do
		# Half in the header, half anywhere (tables, refcounts, data).
		if ((RANDOM % 2)); then off=$((RANDOM % 512)); else off=$(((RANDOM * 32768 + RANDOM) % size)); fi
		poke bad.qcow2 $off
	done
	for cmd in "info --json bad.qcow2" "map --json bad.qcow2" \
		"convert -O raw bad.qcow2 out.raw" "resize bad.qcow2 +1M" \
		"snapshot list --json bad.qcow2" "check --json bad.qcow2"; do
		rm -f out.raw
		rc=0
		# shellcheck disable=SC2086
		blockctl image $cmd >/dev/null 2>err.txt || rc=$?
		# check exits 2 or 3 for what it found, with nothing on stderr.
		max=1
		[[ $cmd != check* ]] || max=3
		if ((rc > max)) || (($(wc -l <err.txt) > (rc == 1))); then
			fail "SEED=$SEED round $i: image $cmd: status $rc: $(cat err.txt)"
		fi
	done
done
