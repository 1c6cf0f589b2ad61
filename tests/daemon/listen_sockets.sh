#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What blockd listens on, as others see it.  DIR/nbd.sock and
# DIR/control.sock are mode 0600 whatever the umask (0, which used to
# leave nbd.sock 0777, and 077), with no private directory left behind.
# On a wildcard TCP address (0.0.0.0, and [::] where IPv6 works) a volume's
# nbd_uri is null, in the listing and the details, not an address no
# client can reach; the unix URI is still there, and the wildcard listener
# serves 127.0.0.1.
source "$(dirname "$0")/lib.sh"
need curl

DIR=$TMP/d
new_volume "$DIR" vol 1M

# start_on LISTEN UMASK: blockd on DIR, listening on LISTEN, started under
# UMASK; its log is DIR/blockd.N.log, the TCP port in PORT.
starts=0
start_on() {
	local i
	starts=$((starts + 1))
	BLOCKD_LOG=$DIR/blockd.$starts.log
	(umask "$2" && exec "$BLOCKD" --data-dir "$DIR" --listen "$1" 2>"$BLOCKD_LOG" </dev/null) &
	BLOCKD_PID=$!
	for ((i = 0; i < 200 * TEST_TIME_SCALE; i++)); do
		kill -0 "$BLOCKD_PID" 2>/dev/null || fail "blockd --listen $1 exited during start-up"
		grep -q " ready" "$BLOCKD_LOG" && break
		sleep 0.05
	done
	grep -q " ready" "$BLOCKD_LOG" || fail "blockd --listen $1 did not become ready"
	PORT=$(sed -n 's/.*listening on \(0\.0\.0\.0\|\[::\]\):\([0-9]*\)$/\2/p' "$BLOCKD_LOG")
	[[ -n $PORT ]] || fail "no wildcard listener in the log"
}

# check_sockets UMASK: both sockets 0600, nothing else made beside them.
check_sockets() {
	local s mode
	for s in nbd.sock control.sock; do
		[[ -S $DIR/$s ]] || fail "$s is not a socket"
		mode=$(stat -c %a "$DIR/$s")
		[[ $mode == 600 ]] || fail "$s has mode $mode with umask $1, not 600"
	done
	[[ -z $(find "$DIR" -maxdepth 1 -name '.blockd-*') ]] ||
		fail "private directories left: $(find "$DIR" -maxdepth 1 -name '.blockd-*')"
}

# check_uris: nbd_uri null in GET /v1/volumes/vol and GET /v1/volumes, the unix URI given.
check_uris() {
	t curl -sS --unix-socket "$DIR/control.sock" -o resp http://localhost/v1/volumes/vol ||
		fail "GET /v1/volumes/vol"
	[[ $(json 'd["nbd_uri"]') == null ]] || fail "nbd_uri on a wildcard listener: $(cat resp)"
	[[ $(json 'd["nbd_unix_uri"]') == "nbd+unix:///vol?socket=$DIR/nbd.sock" ]] ||
		fail "nbd_unix_uri: $(cat resp)"
	t curl -sS --unix-socket "$DIR/control.sock" -o resp http://localhost/v1/volumes ||
		fail "GET /v1/volumes"
	[[ $(json '[v["nbd_uri"] for v in d["volumes"]]') == "[None]" ]] ||
		fail "nbd_uri in the listing on a wildcard listener: $(cat resp)"
}

start_on 0.0.0.0:0 0
check_sockets 0
check_uris
size=$(t nbdinfo --size "nbd://127.0.0.1:$PORT/vol") || fail "nbdinfo over 0.0.0.0:$PORT"
[[ $size == 1048576 ]] || fail "vol over 127.0.0.1:$PORT: size $size"
blockctl --data-dir "$DIR" volume info vol >info.out
! grep -q '0\.0\.0\.0' info.out || fail "blockctl volume info shows 0.0.0.0: $(cat info.out)"
stop_blockd

if sys_python -c 'import socket; socket.socket(socket.AF_INET6).bind(("::", 0))' 2>/dev/null; then
	start_on '[::]:0' 077
else
	echo "no IPv6 here: the second start listens on 0.0.0.0 too"
	start_on 0.0.0.0:0 077
fi
check_sockets 077
check_uris
stop_blockd
echo "PASS"
