#!/bin/bash
# fio's nbd engine against blockd: four jobs (four connections at once to
# one volume, two with 4 KiB blocks and two with 64 KiB, each on its own
# 8 MiB region, 16 requests in flight) write at random with crc32c
# checksums and verify them with no error; a second fio run over the unix
# socket verifies the same data again, and the same verify run against an
# untouched volume fails (so the verification does check); the volume
# file is clean afterwards.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need fio "$PYTHON"
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio lacks the nbd engine"

# jobfile URI [extra global options...]: a job file on stdout.
jobfile() {
	local uri=$1
	shift
	cat <<-EOF
		[global]
		ioengine=nbd
		uri=$uri
		rw=randwrite
		iodepth=16
		size=8M
		offset_increment=8M
		numjobs=2
		verify=crc32c
		verify_fatal=1
		verify_dump=0
		randrepeat=1
		group_reporting=0
	EOF
	printf '%s\n' "$@"
	cat <<-EOF
		[small]
		bs=4k
		offset=0
		[large]
		bs=64k
		offset=32M
	EOF
}

# run_fio NAME URI [options...]: runs fio, JSON output in NAME.json;
# returns fio's status.
run_fio() {
	local name=$1 uri=$2
	shift 2
	jobfile "$uri" "$@" >"$name.fio"
	t fio --output-format=json --output="$name.json" "$name.fio" 2>"$name.err"
}

# check_jobs NAME: four jobs, none with an error, each read back (verified)
# all it wrote -- or, with verify_only, all its region.
check_jobs() {
	sys_python - "$1.json" <<-'EOF'
		import json, sys
		d = json.load(open(sys.argv[1]))
		jobs = d["jobs"]
		bad = []
		if len(jobs) != 4:
		    bad.append(f"{len(jobs)} jobs, not 4")
		for j in jobs:
		    if j["error"] != 0:
		        bad.append(f"job {j['jobname']}: error {j['error']}")
		    if j["read"]["io_bytes"] != 8 << 20:
		        bad.append(f"job {j['jobname']}: verified {j['read']['io_bytes']} bytes")
		for b in bad:
		    print(b)
		sys.exit(1 if bad else 0)
	EOF
}

new_volume data vol 64M
new_volume data blank 64M
start_blockd "$TMP/data"

rc=0
run_fio write "$(tcp_uri vol)" do_verify=1 || rc=$?
[[ $rc == 0 ]] || fail "fio randwrite+verify exited $rc: $(cat write.err)"
check_jobs write || fail "fio randwrite+verify: $(cat write.err)"
grep -q 'verify' write.err && fail "fio reported verify trouble: $(cat write.err)"
written=$(sys_python -c 'import json, sys
print(sum(j["write"]["io_bytes"] for j in json.load(open(sys.argv[1]))["jobs"]))' write.json)
[[ $written == $((32 << 20)) ]] || fail "fio wrote $written bytes, not 32 MiB"
conns=$(grep -c 'connection [0-9]* from .*: export ' "$BLOCKD_LOG" || true)
((conns >= 4)) || fail "four fio jobs made $conns connections"

rc=0
run_fio again "$(unix_uri vol)" verify_only=1 || rc=$?
[[ $rc == 0 ]] || fail "fio verify_only over the unix socket exited $rc: $(cat again.err)"
check_jobs again || fail "fio verify_only: $(cat again.err)"

rc=0
run_fio blank "$(tcp_uri blank)" verify_only=1 || rc=$?
if [[ $rc == 0 ]] || ! grep -q '^verify: bad' blank.err; then
	fail "fio verify_only on an untouched volume did not fail verification (status $rc): $(head -n5 blank.err)"
fi

stop_blockd
qemu_check data/volumes/vol.qcow2
