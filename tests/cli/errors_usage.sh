#!/bin/bash
# Command lines that make no sense exit 2 with one usage line; --help exits 0.
. "$(dirname "$0")/lib.sh"

expect_fail 2 'usage' 
expect_fail 2 'unknown command.*usage' frobnicate
expect_fail 2 'usage' image
expect_fail 2 'unknown image command.*usage' image frobnicate
expect_fail 2 'unknown option.*usage' image info --frob x
expect_fail 2 'unknown option.*usage' image create -z x 1G
expect_fail 2 'needs an argument.*usage' image create x --cluster-size
expect_fail 2 'missing operand.*usage' image create x
expect_fail 2 'missing operand.*usage' image info
expect_fail 2 'unexpected operand.*usage' image info a b
expect_fail 2 'missing operand.*usage' image convert a
expect_fail 2 'unexpected operand.*usage' image convert a b c
expect_fail 2 'missing operand.*usage' image resize a
expect_fail 2 'usage' image create --backing-format raw x 1G
expect_fail 2 'qcow2 destination' image convert -O raw --cluster-size 4K a b
expect_fail 2 'qcow2 destination' image convert -O raw --compress a b
expect_fail 2 'qcow2 destination' image convert -O raw -c a b
expect_fail 2 'needs an argument.*usage' image convert a b -l
expect_fail 2 'missing snapshot command.*usage' image snapshot
expect_fail 2 'unknown snapshot command.*usage' image snapshot frob a
expect_fail 2 'missing operand.*usage' image snapshot delete a
expect_fail 2 'unexpected operand.*usage' image snapshot revert a b c
expect_fail 2 'unexpected operand.*usage' image snapshot list a b
expect_fail 2 'unknown option.*usage' image snapshot list --frob a
expect_fail 2 'missing operand.*usage' image check
expect_fail 2 'unexpected operand.*usage' image check a b
expect_fail 2 "option '--repair' takes no argument.*usage" image check --repair=all a
expect_fail 1 'output format' image convert -O vmdk a b
expect_fail 1 'source format' image convert -f vmdk a b
expect_fail 1 'backing format' image create --backing b --backing-format vmdk x
[[ ! -e x ]] || fail "a refused command created a file"

blockctl --help >help.txt
grep -q 'image create' help.txt || fail "--help does not list image create"
blockctl image --help >help.txt
grep -q 'image convert' help.txt || fail "image --help does not list image convert"
for cmd in create info map convert resize check snapshot "snapshot create" "snapshot list" \
	"snapshot delete" "snapshot revert"; do
	# shellcheck disable=SC2086 # "snapshot create" is two words
	blockctl image $cmd --help >help.txt
	grep -q "^usage: blockctl image $cmd" help.txt || fail "image $cmd --help"
	grep -q "image $cmd" <(blockctl --help) || fail "blockctl --help does not list image $cmd"
done
