#!/bin/bash
# blockd answers like qemu-nbd: the same seeded random NBD requests
# (differential.py) go to blockd and to qemu-nbd serving identical images,
# and every read must agree byte for byte and every error in kind.  After
# both servers stop, qemu-img compare finds the images equal (and equal to
# the test's model of the disk) and qemu-img check finds them clean.  Run
# twice: on a fresh blockctl volume, and on a qcow2 overlay over a backing
# file full of random data.
source "$(dirname "$0")/lib.sh"
need qemu-nbd
need_python_nbd

SEED=${DIFF_SEED:-7101}
OPS=${DIFF_OPS:-2500}
SIZE=$((64 << 20))
DIR=$TMP/data
echo "seed $SEED, $OPS requests per variant"

# start_qemu_nbd IMAGE SOCKET: qemu-nbd serving IMAGE as export "" (a
# helper, killed on exit unless stop_qemu_nbds stopped it).
start_qemu_nbd() {
	local i
	qemu-nbd -f qcow2 --persistent --shared=4 --discard=unmap -k "$2" "$1" 2>>qemu-nbd.log &
	HELPER_PIDS+=($!)
	for ((i = 0; i < 200; i++)); do
		[[ -S $2 ]] && return 0
		sleep 0.05
	done
	fail "qemu-nbd did not start"
}

stop_qemu_nbds() {
	local p
	for p in "${HELPER_PIDS[@]}"; do
		kill -TERM "$p"
		wait "$p" || fail "qemu-nbd exited with status $? after SIGTERM"
	done
	HELPER_PIDS=()
}

# The plain variant: a fresh volume.
new_volume "$DIR" plain "$SIZE"
mkdir qemu
cp "$DIR/volumes/plain.qcow2" qemu/plain.qcow2

# The backing variant: random data with holes in the base, an empty overlay.
sys_python - "$SEED" base.raw "$SIZE" <<'PY'
import random, sys
rng = random.Random(int(sys.argv[1]))
size = int(sys.argv[3])
with open(sys.argv[2], "wb") as f:
    for off in range(0, size, 1 << 20):
        # Mostly data, some zeros, on odd boundaries.
        f.write(rng.randbytes(1 << 20) if rng.random() < 0.7 else bytes(1 << 20))
    f.truncate(size)
PY
# In DIR/bases: blockd serves no backing file from outside its data directory.
mkdir -p "$DIR/bases"
t qemu-img convert -q -f raw -O qcow2 base.raw "$DIR/bases/base.qcow2"
t qemu-img create -q -f qcow2 -b "$DIR/bases/base.qcow2" -F qcow2 "$DIR/volumes/over.qcow2"
cp "$DIR/volumes/over.qcow2" qemu/over.qcow2

start_blockd "$DIR"
start_qemu_nbd qemu/plain.qcow2 "$TMP/plain.sock"
start_qemu_nbd qemu/over.qcow2 "$TMP/over.sock"

echo "--- plain volume"
sys_python "$DAEMON_TEST_DIR/differential.py" "$SEED" "$OPS" "$(unix_uri plain)" \
	"nbd+unix:///?socket=$TMP/plain.sock" plain.shadow ||
	fail "plain volume: blockd and qemu-nbd disagree (seed $SEED)"
echo "--- overlay on a backing file"
sys_python "$DAEMON_TEST_DIR/differential.py" $((SEED + 1)) "$OPS" "$(tcp_uri over)" \
	"nbd+unix:///?socket=$TMP/over.sock" over.shadow base.raw ||
	fail "overlay: blockd and qemu-nbd disagree (seed $((SEED + 1)))"

stop_blockd
stop_qemu_nbds
for vol in plain over; do
	t qemu-img compare -f qcow2 -F qcow2 "$DIR/volumes/$vol.qcow2" "qemu/$vol.qcow2" ||
		fail "$vol: the images differ after both servers stopped"
	t qemu-img compare -q -f raw -F qcow2 "$vol.shadow" "$DIR/volumes/$vol.qcow2" ||
		fail "$vol: blockd's image differs from the model"
	qemu_check "$DIR/volumes/$vol.qcow2"
	qemu_check "qemu/$vol.qcow2"
done
echo "PASS"
