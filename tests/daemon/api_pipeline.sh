#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Pipelined HTTP requests on the control socket (api_pipeline.py says
# which): several requests in one write, a request cut across writes, and a
# malformed request after a good one are answered in order or end in a 400
# or a close, never a hang; blockd keeps serving.
source "$(dirname "$0")/lib.sh"
need "$PYTHON"

new_volume "$TMP/d" a 1M
new_volume "$TMP/d" b 1M
start_blockd "$TMP/d"
sys_python "$DAEMON_TEST_DIR/api_pipeline.py" "$TMP/d/control.sock" "$TEST_TIME_SCALE" ||
	fail "pipelined requests"
kill -0 "$BLOCKD_PID" || fail "blockd died"
stop_blockd
for v in a b c d; do
	qemu_check "$TMP/d/volumes/$v.qcow2"
done
echo "PASS"
