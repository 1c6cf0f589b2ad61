#!/bin/bash
# image convert that fails half way (the file size limit stops the
# writes) prints one line and leaves no partial destination behind.
. "$(dirname "$0")/lib.sh"

head -c $((8 << 20)) /dev/urandom >src.raw
for fmt in qcow2 raw; do
	rc=0
	(
		trap '' XFSZ
		ulimit -f 2048 # KiB
		exec "$BLOCKCTL" image convert -O $fmt src.raw "dst.$fmt"
	) 2>err.txt || rc=$?
	[[ $rc == 1 ]] || fail "$fmt: exit status $rc: $(cat err.txt)"
	[[ $(wc -l <err.txt) == 1 ]] || fail "$fmt: not one line: $(cat err.txt)"
	grep -q "^blockctl: .*dst.$fmt" err.txt || fail "$fmt: $(cat err.txt)"
	[[ ! -e dst.$fmt ]] || fail "$fmt: the partial destination is still there"
done
