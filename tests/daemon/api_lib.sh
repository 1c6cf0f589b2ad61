# SPDX-License-Identifier: MIT
# api_lib.sh - sourced (after lib.sh) by the api_*.sh tests of blockd's
# control API: HTTP calls on DIR/control.sock, checks of their answers
# (json, in ../lib.sh, reads them), and NBD clients that hold a volume
# attached (api_client.py).
need curl nbdcopy cmp
need_python_nbd
CLIENT=$DAEMON_TEST_DIR/api_client.py

# Checks of error answers do not stop the test: it reports them all, then
# fails (api_done).
API_BAD=()
bad() {
	echo "BAD: $*" >&2
	API_BAD+=("$*")
}
api_done() {
	if ((${#API_BAD[@]})); then
		printf '  %s\n' "${API_BAD[@]}" >&2
		fail "${#API_BAD[@]} check(s) failed"
	fi
}

# api METHOD PATH [BODY]: one call on the control socket; the status in
# STATUS, the body in the file resp.  BODY "@FILE" sends FILE.
api() {
	local method=$1 path=$2
	local args=(--silent --show-error --path-as-is --max-time 50
		--unix-socket "$BLOCKD_DIR/control.sock" -X "$method" -o resp -w '%{http_code}')
	if (($# > 2)); then
		args+=(-H 'Content-Type: application/json' --data-binary "$3")
	fi
	rm -f resp
	STATUS=$(curl "${args[@]}" "http://localhost$path") || fail "curl $method $path failed"
	touch resp
}

# expect STATUS METHOD PATH [BODY]: the call must answer STATUS.
expect() {
	local want=$1
	shift
	api "$@"
	[[ $STATUS == "$want" ]] || fail "$1 $2 ${3:-}: status $STATUS, not $want: $(cat resp)"
}

# expect_error STATUS CODE METHOD PATH [BODY]: the call must fail with
# STATUS and the body {"error": {"code": CODE, "message": "..."}}, nothing else.
expect_error() {
	local want=$1 code=$2 shape what
	shift 2
	api "$@"
	what="$1 $2 ${3:-}"
	what=${what:0:200}
	if [[ $STATUS != "$want" ]]; then
		bad "$what: status $STATUS, not $want: $(head -c 300 resp)"
		return 0
	fi
	shape=$($PYTHON -c 'import json, sys
try:
    d = json.load(open("resp"))
except ValueError as e:
    print("not JSON: %s" % e); sys.exit()
if not isinstance(d, dict) or list(d) != ["error"] or not isinstance(d["error"], dict):
    print("not {\"error\": {...}}"); sys.exit()
e = d["error"]
if sorted(e) != ["code", "message"]:
    print("error keys %s" % sorted(e)); sys.exit()
if e["code"] != sys.argv[1]:
    print("code %r, not %r" % (e["code"], sys.argv[1])); sys.exit()
if not isinstance(e["message"], str) or not e["message"]:
    print("empty message")' "$code")
	[[ -z $shape ]] || bad "$what: error body: $shape: $(head -c 300 resp)"
}

# names: the sorted volume names GET /v1/volumes lists, one line.
names() {
	expect 200 GET /v1/volumes
	json '" ".join(sorted(v["name"] for v in d["volumes"]))'
}

# hold_start TAG EXPORT [sha]: an NBD client (unix socket) that keeps
# EXPORT attached until hold_stop TAG; with "sha" it then reads the whole
# export and hold_stop prints its sha256.
declare -A HOLD_PID
hold_start() {
	local tag=$1 export=$2 i
	rm -f "hold.$tag.ready" "hold.$tag.go" "hold.$tag.sha"
	$PYTHON "$CLIENT" hold "$(unix_uri "$export")" "hold.$tag.ready" "hold.$tag.go" \
		${3:+"hold.$tag.sha"} &
	HOLD_PID[$tag]=$!
	for ((i = 0; i < 200; i++)); do
		[[ -f hold.$tag.ready ]] && return 0
		kill -0 "${HOLD_PID[$tag]}" 2>/dev/null || break
		sleep 0.05
	done
	fail "the NBD client of $export did not connect"
}
hold_stop() {
	local tag=$1 rc=0
	touch "hold.$tag.go"
	t tail --pid="${HOLD_PID[$tag]}" -f /dev/null || fail "the $tag client hangs"
	wait "${HOLD_PID[$tag]}" || rc=$?
	[[ $rc == 0 ]] || fail "the $tag client failed (status $rc)"
	HOLD_SHA=
	if [[ -f hold.$tag.sha ]]; then
		# shellcheck disable=SC2034 # read by the tests
		HOLD_SHA=$(cat "hold.$tag.sha")
	fi
}

# wait_detached VOL: blockd notices a closed connection a moment later.
wait_detached() {
	local i
	for ((i = 0; i < 200; i++)); do
		expect 200 GET "/v1/volumes/$1"
		[[ $(json 'len(d["attachments"])') == 0 ]] && return 0
		sleep 0.05
	done
	fail "volume $1 still attached: $(cat resp)"
}

# dump EXPORT FILE: the export's contents, read over NBD (unix socket).
dump() {
	rm -f "$2"
	t nbdcopy "$(unix_uri "$1")" "$2" || fail "nbdcopy $1"
}

# nbd_write EXPORT OFFSET LENGTH BYTE: writes and flushes over NBD.
nbd_write() {
	sys_python "$CLIENT" write "$(unix_uri "$1")" "$2" "$3" "$4" || fail "writing to $1"
}

# export_size EXPORT: its size as nbdinfo reads it on a new connection.
export_size() {
	t nbdinfo --size "$(unix_uri "$1")" || fail "nbdinfo --size $1"
}

# check_files DIR: qemu-img check finds nothing in any volume or base
# (blockd stopped).
check_files() {
	local f
	for f in "$1"/volumes/*.qcow2 "$1"/bases/*.qcow2; do
		[[ -e $f ]] || continue
		qemu_check "$f"
	done
}
