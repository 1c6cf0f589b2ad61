#!/bin/bash
# A qcow2 image cut short inside its header is refused with one line and
# status 1; one cut after the header (tables missing) never crashes a
# command or gets more than one line of error.
. "$(dirname "$0")/lib.sh"

qimg create -q -f qcow2 good.qcow2 64M
for len in 4 8 20 48 71 72 100 103; do
	head -c $len good.qcow2 >cut-$len.qcow2
	expect_fail 1 "cut-$len.qcow2: " image info cut-$len.qcow2
	expect_fail 1 "cut-$len.qcow2: " image map --json cut-$len.qcow2
	expect_fail 1 "cut-$len.qcow2: " image resize cut-$len.qcow2 1G
	expect_fail 1 "cut-$len.qcow2: " image convert cut-$len.qcow2 out.qcow2
	[[ ! -e out.qcow2 ]] || fail "a destination was left behind"
done

# The header is whole but the tables it points at are gone.
for len in 104 200 4096; do
	head -c $len good.qcow2 >cut-$len.qcow2
	for cmd in "info cut-$len.qcow2" "map --json cut-$len.qcow2" \
		"convert cut-$len.qcow2 out-$len.qcow2" "resize cut-$len.qcow2 1G"; do
		rc=0
		# shellcheck disable=SC2086
		blockctl image $cmd >out.txt 2>err.txt || rc=$?
		((rc == 0 || rc == 1)) || fail "image $cmd: exit status $rc"
		(($(wc -l <err.txt) <= rc)) || fail "image $cmd: $(cat err.txt)"
	done
done
