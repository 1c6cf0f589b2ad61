#!/bin/bash
# SPDX-License-Identifier: MIT
# kill -9 loses nothing that was promised: over several rounds, clients on
# three connections to each of two exports (multi-conn) write, zero and
# trim at random, some with FUA, with a FLUSH now and then, and blockd is
# killed with SIGKILL at a random moment.  After each restart every sector
# holds its last durable value or a later one (crash_client.py explains the
# model), never older data or garbage.  qemu-img finds nothing in the
# crashed images that it cannot repair, and reads them as blockd does.
# Volume "lazy" (64 KiB clusters, lazy refcounts) must come out of the
# restart repaired: a clean stop leaves it without even a leak.  Volume
# "small" (512-byte clusters: a table update for nearly every request)
# may keep leaked clusters.  Every other start of blockd runs it with the
# smallest metadata cache and one thread, so that tables are written back
# under cache pressure between flushes too.
source "$(dirname "$0")/lib.sh"
need_python_nbd
CLIENT=$DAEMON_TEST_DIR/crash_client.py

SEED=${CRASH_SEED:-20240611}
ROUNDS=${CRASH_ROUNDS:-5}
SIZE=$((64 << 20))
DIR=$TMP/data
VOLS=(lazy small)
echo "seed $SEED, $ROUNDS rounds"
RANDOM=$SEED

new_volume "$DIR" lazy "$SIZE" --lazy-refcounts
new_volume "$DIR" small "$SIZE" --cluster-size 512

starts=0
start() {
	if ((starts++ % 2)); then
		start_blockd "$DIR" --cache-size 1M --threads 1
	else
		start_blockd "$DIR"
	fi
}

# qemu_judge VOL ROUND: a crashed image may leak clusters (qemu-img check
# exits 3) but not be corrupt (2).  With lazy refcounts it may be dirty
# (incompatible feature bit 0, byte 79), and its refcounts then lag behind:
# qemu-img check calls that corruption, though qemu repairs it on open.
# So also judge a repaired copy: what check -r all cannot fix is real.
qemu_judge() {
	local vol=$1 round=$2 rc=0 dirty
	dirty=$(dirty_bit "$DIR/volumes/$vol.qcow2")
	t qemu-img check "$DIR/volumes/$vol.qcow2" >check.out 2>&1 || rc=$?
	echo "round $round: qemu-img check of crashed $vol (dirty bit $dirty): status $rc"
	if [[ $dirty == 0 && $rc != 0 && $rc != 3 ]]; then
		cat check.out >&2
		fail "round $round: qemu-img check of crashed $vol exited $rc"
	fi
	cp "$DIR/volumes/$vol.qcow2" "crashed-$vol.qcow2"
	rc=0
	t qemu-img check -r all "crashed-$vol.qcow2" >check.out 2>&1 || rc=$?
	if [[ $rc != 0 ]]; then
		cat check.out >&2
		fail "round $round: qemu-img check -r all of crashed $vol exited $rc"
	fi
}

for ((round = 1; round <= ROUNDS; round++)); do
	[[ -n $BLOCKD_PID ]] || start
	delay_ms=$((300 + RANDOM % 2200))
	echo "round $round: kill after $delay_ms ms"
	clients=()
	for i in "${!VOLS[@]}"; do
		vol=${VOLS[i]}
		seed=$((SEED * 100 + round * 2 + i))
		echo "round $round: $vol: client seed $seed"
		rm -f "ready.$vol"
		$PYTHON "$CLIENT" run "$(unix_uri "$vol")" "$SIZE" "journal.$vol.$round" "$seed" \
			$((round << 32)) "ready.$vol" &
		clients+=($!)
	done
	for vol in "${VOLS[@]}"; do
		for ((i = 0; i < 200; i++)); do
			[[ -f ready.$vol ]] && break
			sleep 0.05
		done
		[[ -f ready.$vol ]] || fail "round $round: the $vol client did not connect"
	done
	sleep "$((delay_ms / 1000)).$(printf %03d $((delay_ms % 1000)))"
	kill_blockd
	for i in "${!clients[@]}"; do
		rc=0
		t tail --pid="${clients[i]}" -f /dev/null || fail "round $round: a client hangs"
		wait "${clients[i]}" || rc=$?
		[[ $rc == 0 ]] || fail "round $round: the ${VOLS[i]} client failed (status $rc)"
	done

	for vol in "${VOLS[@]}"; do
		qemu_judge "$vol" "$round"
	done
	start
	for vol in "${VOLS[@]}"; do
		$PYTHON "$CLIENT" verify "$(unix_uri "$vol")" "$SIZE" "journal.$vol.$round" \
			"baseline.$vol" || fail "round $round: $vol: lost or wrong data after kill -9"
	done
	# Every other round, and after the last, a clean stop; the other
	# rounds crash a daemon that has just repaired the images.
	if ((round % 2 == 0 || round == ROUNDS)); then
		stop_blockd
		qemu_check "$DIR/volumes/lazy.qcow2"
		rc=0
		t qemu-img check "$DIR/volumes/small.qcow2" >check.out 2>&1 || rc=$?
		if [[ $rc != 0 && $rc != 3 ]]; then
			cat check.out >&2
			fail "round $round: qemu-img check of small after a clean stop exited $rc"
		fi
		# blockd read the crashed images as qemu does: same contents.
		for vol in "${VOLS[@]}"; do
			t qemu-img compare -q "crashed-$vol.qcow2" "$DIR/volumes/$vol.qcow2" ||
				fail "round $round: blockd and qemu see the crashed $vol differently"
		done
	fi
done
echo "PASS: $ROUNDS kill -9 rounds"
