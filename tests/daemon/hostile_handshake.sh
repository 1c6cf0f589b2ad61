#!/bin/bash
# blockd against raw-socket clients that break the NBD handshake (see
# hostile_handshake.py): bad magic and unknown client flags close the
# connection; option lengths up to 2^32-1 are never read or allocated
# (blockd's memory stays put); truncated and idle handshakes do not hold
# up other clients; bad export names (../x, a/b, "", vol@nosuchsnap, 5000
# bytes, ...) get error replies and the connection goes on; 200
# connections at once are served and leave no descriptor behind; a second
# host (127.0.0.2, or the unix socket) gets ERR_POLICY for a volume
# 127.0.0.1 writes, and gets it once that client is gone.  Files named by
# the traversal attempts exist, so a server that followed them would
# answer.  Afterwards blockd still serves and stops cleanly.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need qemu-io "$PYTHON"

new_volume data vol 8M
new_volume data other 8M
for v in vol other; do
	t qemu-io -f qcow2 -c 'write -P 0x42 0 1M' "data/volumes/$v.qcow2" >/dev/null
done
blockctl image snapshot create data/volumes/vol.qcow2 s1 >/dev/null
# Bait for path traversal: qcow2 files where ../x and a/b would lead if
# names were used as paths.
blockctl image create data/x.qcow2 8M >/dev/null
mkdir -p data/volumes/a
blockctl image create data/volumes/a/b.qcow2 8M >/dev/null

start_blockd "$TMP/data"

# 127.0.0.2 must be usable as a source address for the second-host check.
sys_python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.2", 0))' ||
	fail "cannot bind to 127.0.0.2"

rc=0
sys_python "$DAEMON_TEST_DIR/hostile_handshake.py" "$BLOCKD_PORT" "$BLOCKD_SOCK" \
	"$BLOCKD_PID" >hostile.out 2>&1 || rc=$?
if [[ $rc != 0 ]]; then
	cat hostile.out >&2
	fail "hostile_handshake.py exited $rc"
fi
kill -0 "$BLOCKD_PID" || fail "blockd is gone"

# Still serving, to ordinary clients on both transports.
t nbdinfo --list "$(tcp_uri "")" >list.txt || fail "nbdinfo --list after the hostile clients"
for name in vol other vol@s1; do
	grep -q "export=\"$name\"" list.txt || fail "export $name missing: $(cat list.txt)"
done
grep -q 'export="a/b"\|export="x"\|export="\.\./x"' list.txt && fail "a file outside the rules is listed"
size=$(t nbdinfo --size "$(unix_uri vol)") || fail "nbdinfo --size $(unix_uri vol)"
[[ $size == 8388608 ]] || fail "vol size $size"

stop_blockd
qemu_check data/volumes/vol.qcow2
qemu_check data/volumes/other.qcow2
