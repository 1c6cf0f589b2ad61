#!/bin/bash
# SPDX-License-Identifier: MIT
# A concurrency stress test of one running blockd (clients: stress.py).
# For STRESS_SECONDS (default 60), at once: writers on volumes w0 and w1
# (three connections each, multi-conn; WRITE with and without FUA, TRIM,
# WRITE_ZEROES, FLUSH, verifying READs), connect/read/disconnect cycles on
# NAME, NAME:ro and NAME@SNAP over the unix socket and TCP (from 127.0.0.1
# and 127.0.0.2, two hosts), bursts of reads on r0:ro, three hosts taking
# turns at writing c0, and through the control API snapshots taken,
# checked, deleted and restored, clones made, checked and deleted, volumes
# grown, created and deleted, GET /v1/volumes, GET /v1/volumes/NAME and
# GET /metrics in a loop; SIGHUP (a rescan) every 0.5-1 s.
#
# It passes if:
#  1. No request waits longer than the liveness bound, 5 s: every NBD
#     command, handshake and disconnect and every API call is timed, and one
#     that takes longer (or never returns) fails the test, saying what it was
#     and how long it took.  This is not a performance target: a correct
#     daemon answers these requests in milliseconds, and in well under 5 s
#     even on a machine loaded far past its cores (the volumes are small,
#     16-40 MiB, so that no legitimate call, a clone copying a snapshot
#     included, comes near it); deadlocks and starvation show as stalls
#     that never end.  Time the client process itself could not run (a
#     heartbeat thread in each notes when it wakes late) is not counted:
#     a frozen daemon leaves its clients idle, so that never hides a stall.
#  2. Nothing fails but the documented refusals, each allowed only where
#     the test cannot know the outcome in advance:
#       API 409  DELETE of a volume while attached (expected: the test holds
#                a connection; also for a moment after its last client left,
#                until blockd notices the close), DELETE of a snapshot while
#                NAME@SNAP is attached (a 204 while a reader was attached all
#                through the call fails), restore while a writer is attached
#                (always on w0/w1, whose writers stay; on c0 whenever a writer
#                holds it: a 200 while one was attached all through fails);
#       API 404  GET of a volume the listing named a moment before (clones
#                and t-volumes are deleted by other threads), and of deleted
#                volumes (expected);
#       NBD      NBD_REP_ERR_POLICY for a host asking for a volume another
#                host writes (expected on w0/w1, allowed on c0, and success
#                there while another host holds it fails); EPERM for a write
#                to NAME:ro or NAME@SNAP (expected: success fails); "no export"
#                for a deleted volume (expected).
#     Anything else fails: a 500 or other status, EIO or any NBD error, a
#     handshake refused for an existing export, a dropped connection, data
#     that differs from the journal or model, blockd dying.
#  3. After the run, SIGTERM: blockd exits 0 within 30 s, and qemu-img check
#     finds no errors and no leaks in any file left in DIR/volumes and
#     DIR/bases (which must hold just the four volumes: every clone and
#     temporary volume was deleted, and bases go with their last clone).
#  4. A snapshot holds every write acknowledged before its POST was sent:
#     writers journal each request (block, value, send time, ack time), and
#     right after each snapshot of w0/w1 it is read back through NAME@SNAP;
#     every block must hold the value of its last request acknowledged
#     before the POST was sent, or of a request on it sent later but before
#     the POST's reply, nothing else (TRIM: zeros or the value before).
#     Snapshots, clones and restores of r0 (written in bursts by one client)
#     must read exactly as the model; a snapshot must read the same every
#     time, to the end; the volumes must hold their last values at the end.
#  5. Invariants seen from outside: no volume is ever listed with two
#     writing hosts, nor held read-write by two hosts at once (c0's hosts
#     compare notes); a second host never gets w0/w1 read-write; a new
#     connection sees a volume at least as big as the last grow answered;
#     every attachment goes away once its client has left.
#
# Options, by environment: STRESS_SECONDS (default 60) runs longer;
# STRESS_SLOW=N multiplies the liveness bound and the grace times by N for
# slow builds (default TEST_TIME_SCALE, which ctest sets in sanitizer builds);
# STRESS_SEED fixes the clients' random choices.  On failure the test prints
# each failure, the stacks of blockd's threads (gdb, if installed; a stall
# is usually a lock cycle, and the stacks show it), and the end of blockd's
# log.
source "$(dirname "$0")/lib.sh"
need_python_nbd
$PYTHON -c 'import socket; socket.socket().bind(("127.0.0.2", 0))' 2>/dev/null || {
	skip "cannot bind to 127.0.0.2 (the second host)"
}
SECONDS_TO_RUN=${STRESS_SECONDS:-60}
SLOW=${STRESS_SLOW:-$TEST_TIME_SCALE}
[[ $SECONDS_TO_RUN =~ ^[0-9]+$ && $SLOW =~ ^[0-9]+$ && $SLOW -ge 1 ]] ||
	fail "STRESS_SECONDS and STRESS_SLOW must be whole numbers (STRESS_SLOW at least 1)"
export STRESS_SLOW=$SLOW

DIR=$TMP/data
OUT=$TMP/out
mkdir -p "$OUT"
start_blockd "$DIR"

# stacks: blockd's threads as gdb sees them, one line each (innermost call
# first): a frozen daemon's lock cycle shows there.
stacks() {
	if command -v gdb >/dev/null && kill -0 "$BLOCKD_PID" 2>/dev/null; then
		echo "--- blockd's threads (gdb; innermost call first)" >&2
		timeout 60 gdb -p "$BLOCKD_PID" -batch -ex 'thread apply all bt' 2>/dev/null |
			awk '/^Thread /{if (line) print line; line = "thread " $6; next}
			     /^#/{fn = ($3 == "in") ? $4 : $2; at = ""
			          for (i = 1; i <= NF; i++) if ($i == "at") at = $(i + 1)
			          sub(/.*\//, "", at)
			          line = line " " fn (at ? "(" at ")" : "")}
			     END{if (line) print line}' | grep -v -E '^thread [0-9]+\) [?]+$' >&2 || true
	fi
}

# Here no step may hang: the clients bound themselves, and this bounds them.
start=$(date +%s)
rc=0
timeout $((SECONDS_TO_RUN + 300 * SLOW)) $PYTHON "$DAEMON_TEST_DIR/stress.py" run \
	"$DIR" "$BLOCKD_PORT" "$BLOCKD_PID" "$SECONDS_TO_RUN" "$OUT" || rc=$?
echo "clients ran $(($(date +%s) - start)) s (status $rc)"
if [[ $rc != 0 ]]; then
	stacks
	# Whether it still stops is worth knowing too, but a frozen daemon will not.
	kill -TERM "$BLOCKD_PID" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$BLOCKD_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$BLOCKD_PID" 2>/dev/null; then
		echo "blockd still running 10 s after SIGTERM" >&2
	else
		st=0
		wait "$BLOCKD_PID" || st=$?
		BLOCKD_PID=
		echo "blockd exited with status $st after SIGTERM" >&2
	fi
	echo "--- blockd's warnings and errors (last 30)" >&2
	grep -E ' (warn|error): ' "$BLOCKD_LOG" | tail -n 30 >&2 || true
	fail "the stress clients found the failures above (${SECONDS_TO_RUN} s run)"
fi

STEP_TIMEOUT=30 stop_blockd
for f in "$DIR"/volumes/* "$DIR"/bases/*; do
	[[ -e $f ]] || continue
	[[ $f == *.qcow2 ]] || fail "stray file $f left in the data directory"
	qemu_check "$f"
done
echo "slowest requests (seconds the client could run while waiting; kind; example):"
sort -rn "$OUT"/slowest.* | awk -F'\t' '!seen[$2]++' | head -n 12 | cut -c1-160
echo "PASS: ${SECONDS_TO_RUN} s of concurrent clients"
