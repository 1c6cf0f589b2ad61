#!/bin/bash
# SPDX-License-Identifier: MIT
# kill -9 in the middle of control calls leaves the store in the old state
# or the new one.  A volume holds 256 MiB of random data; in each round
# blockd takes a snapshot of it and then a clone of that snapshot (which
# copies 256 MiB into a base image), each call started with curl and
# blockd killed with SIGKILL a moment later (the clone kills are spread
# over the time a clone takes).  After each kill: qemu-img finds no
# corruption in any file (leaked clusters are allowed); after the restart
# no temporary file is left in volumes/ or bases/, the snapshot is there
# or not (there if the call was answered), the clone is there and reads
# as the snapshot, or is not there at all (there if answered), every base
# image is complete, and the volume and its snapshot read as before.  The
# call is then repeated if needed, and after a clean stop qemu-img check
# finds nothing at all in any file.
source "$(dirname "$0")/lib.sh"
source "$DAEMON_TEST_DIR/api_lib.sh"

SEED=${CRASH_SEED:-$(date +%s)}
ROUNDS=${CRASH_ROUNDS:-5}
echo "seed $SEED, $ROUNDS rounds"
RANDOM=$SEED
DIR=$TMP/data
M=$((1 << 20))
SIZE=$((256 * M))

start_blockd "$DIR"
expect 201 POST /v1/volumes "{\"name\": \"big\", \"size\": $SIZE}"
head -c "$SIZE" /dev/urandom >big.want
t nbdcopy big.want "$(unix_uri big)" || fail "filling big"
wait_detached big

# timed_clone FROM NAME: a clone that is not interrupted; CLONE_MS keeps
# the shortest time one took (the kills are spread over it).
CLONE_MS=
timed_clone() {
	local begin ms
	begin=$(date +%s%N)
	expect 201 POST /v1/volumes "{\"name\": \"$2\", \"from\": \"$1\"}"
	ms=$((($(date +%s%N) - begin) / 1000000))
	[[ -n $CLONE_MS ]] && ((CLONE_MS < ms)) || CLONE_MS=$ms
}
for s in s0 s00; do
	expect 201 POST /v1/volumes/big/snapshots "{\"name\": \"$s\"}"
	timed_clone "big@$s" c0
	expect 204 DELETE /v1/volumes/c0
	expect 204 DELETE "/v1/volumes/big/snapshots/$s"
done
echo "a clone of big takes $CLONE_MS ms"
[[ -z $(ls -A "$DIR/bases") ]] || fail "bases holds $(ls -A "$DIR/bases") after c0 was deleted"

# call_bg METHOD PATH BODY TAG: the call in the background; call_wait TAG
# then sets CODE to its HTTP status (000: no answer).
call_bg() {
	rm -f "$4.code"
	curl --silent --unix-socket "$DIR/control.sock" --max-time 50 -X "$1" \
		-H 'Content-Type: application/json' --data-binary "$3" -o "$4.resp" \
		-w '%{http_code}' "http://localhost$2" >"$4.code" &
	CALL_PID=$!
}
call_wait() {
	t tail --pid="$CALL_PID" -f /dev/null || fail "curl hangs after the kill"
	wait "$CALL_PID" || true
	CODE=$(cat "$1.code")
}

# kill_after MS: kill -9 blockd MS milliseconds from now.
kill_after() {
	sleep "$(($1 / 1000)).$(printf %03d $(($1 % 1000)))"
	kill_blockd
}

# judge_crashed WHAT: no file is corrupt after the kill (leaks allowed).
# Snapshot operations set the qcow2 dirty bit (incompatible feature bit 0,
# byte 79) while they run: a file killed inside one may look inconsistent
# to qemu-img check, and both qemu and blockd repair it on open.  So a
# dirty file is judged by a repaired copy instead: what check -r all
# cannot fix is real corruption.
judge_crashed() {
	local f rc dirty
	for f in "$DIR"/volumes/*.qcow2 "$DIR"/bases/*.qcow2; do
		[[ -e $f ]] || continue
		rc=0
		dirty=$(dirty_bit "$f")
		if [[ $dirty == 1 ]]; then
			cp "$f" dirty-copy.qcow2
			t qemu-img check -r all dirty-copy.qcow2 >check.out 2>&1 || rc=$?
			rm -f dirty-copy.qcow2
		else
			t qemu-img check "$f" >check.out 2>&1 || rc=$?
		fi
		if [[ $rc != 0 && $rc != 3 ]] || { [[ $dirty == 1 ]] && [[ $rc != 0 ]]; }; then
			cat check.out >&2
			fail "$1: qemu-img check ${f#"$DIR"/} after the kill exited $rc"
		fi
	done
}

# no_temporaries WHAT: the restart cleared every temporary.
no_temporaries() {
	local left
	left=$(cd "$DIR" && find volumes bases \( -name '.*' -o -name '*.tmp' \) -printf '%p (%s bytes) ')
	[[ -z $left ]] || bad "$1: temporaries left after the restart: $left"
}

# same EXPORT FILE WHAT: the export reads as FILE.
same() {
	dump "$1" now.raw
	cmp -s "$2" now.raw || fail "$3: $1 does not read as it should"
}

# bases_complete WHAT: every base is a complete copy of big.want, the
# only snapshot that has a base when it is called.
bases_complete() {
	local b
	for b in "$DIR"/bases/*.qcow2; do
		[[ -e $b ]] || continue
		t qemu-img compare -q -U -f qcow2 -F raw "$b" big.want ||
			fail "$1: the base ${b##*/} is not a complete copy of the snapshot"
	done
}

for ((round = 1; round <= ROUNDS; round++)); do
	snap=s$round clone=c$round
	# Each round's snapshot differs from the last ones.
	nbd_write big 0 4096 $((0x30 + round))
	printf "\\x$(printf %x $((0x30 + round)))%.0s" $(seq 4096) |
		dd of=big.want bs=1 conv=notrunc status=none
	wait_detached big

	# --- kill -9 during a snapshot.
	delay=$((RANDOM % 25))
	echo "round $round: snapshot $snap, kill after $delay ms"
	call_bg POST /v1/volumes/big/snapshots "{\"name\": \"$snap\"}" snap
	kill_after "$delay"
	call_wait snap
	echo "round $round: the snapshot call answered $CODE"
	judge_crashed "round $round snapshot"
	start_blockd "$DIR"
	no_temporaries "round $round snapshot"
	expect 200 GET /v1/volumes/big/snapshots
	present=$(json "[s['name'] for s in d['snapshots']] == ['$snap']")
	[[ $present == true || $(json 'd["snapshots"]') == "[]" ]] ||
		fail "round $round: after a kill during snapshot $snap: $(cat resp)"
	[[ $CODE != 201 || $present == true ]] || fail "round $round: snapshot $snap answered 201 but is gone"
	same big big.want "round $round, after a kill during a snapshot"
	if [[ $present == true ]]; then
		same "big@$snap" big.want "round $round, a snapshot that survived a kill"
	else
		expect 201 POST /v1/volumes/big/snapshots "{\"name\": \"$snap\"}"
	fi

	# --- kill -9 during a clone, at a point spread over its run.
	# Round r kills in the r-th part of [0, 1.1 * CLONE_MS].
	span=$((CLONE_MS * 11 / 10))
	delay=$((span * (round - 1) / ROUNDS + RANDOM % (span / ROUNDS + 1)))
	echo "round $round: clone $clone from big@$snap, kill after $delay ms"
	call_bg POST /v1/volumes "{\"name\": \"$clone\", \"from\": \"big@$snap\"}" clone
	kill_after "$delay"
	call_wait clone
	echo "round $round: the clone call answered $CODE; bases: $(ls -A "$DIR/bases" | tr '\n' ' ')"
	judge_crashed "round $round clone"
	start_blockd "$DIR"
	no_temporaries "round $round clone"
	bases_complete "round $round clone"
	names >/dev/null
	case $(json 'sorted(v["name"] for v in d["volumes"])') in
	"['big', '$clone']") present=true ;;
	"['big']") present=false ;;
	*) fail "round $round: volumes after a kill during a clone: $(cat resp)" ;;
	esac
	[[ $CODE != 201 || $present == true ]] || fail "round $round: clone $clone answered 201 but is gone"
	echo "round $round: $clone present after the restart: $present"
	expect 200 GET /v1/volumes/big/snapshots
	[[ $(json '[s["name"] for s in d["snapshots"]]') == "['$snap']" ]] ||
		fail "round $round: big's snapshots after a kill during a clone: $(cat resp)"
	if [[ $present == true ]]; then
		expect 200 GET "/v1/volumes/$clone"
		[[ $(json 'd["backing"]') == */bases/big@$snap-*.qcow2 ]] ||
			fail "round $round: $clone has backing $(json 'd["backing"]')"
	else
		timed_clone "big@$snap" "$clone"
	fi
	same "$clone" big.want "round $round, a clone after a kill"
	same "big@$snap" big.want "round $round, after a kill during a clone"
	same big big.want "round $round, after a kill during a clone"
	mapfile -t bases < <(ls -A "$DIR/bases")
	[[ ${#bases[@]} == 1 && ${bases[0]} == big@$snap-*.qcow2 ]] ||
		fail "round $round: bases holds ${bases[*]}"

	# --- a clean stop: nothing at all wrong in any file.
	stop_blockd
	check_files "$DIR"
	bases_complete "round $round, clean stop"

	# --- the next round starts from big alone.
	start_blockd "$DIR"
	expect 204 DELETE "/v1/volumes/$clone"
	expect 204 DELETE "/v1/volumes/big/snapshots/$snap"
	[[ -z $(ls -A "$DIR/bases") ]] ||
		fail "round $round: bases holds $(ls -A "$DIR/bases") after the last clone was deleted"
done
stop_blockd
check_files "$DIR"
api_done
echo "PASS: $ROUNDS rounds of kill -9 during snapshot and clone calls"
