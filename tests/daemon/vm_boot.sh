#!/bin/bash
# SPDX-License-Identifier: MIT
# vm_boot.sh - a real Linux guest keeps its data on a blockd volume.
# Debian's cloud kernel and a busybox initramfs (vm/init) boot under qemu
# TCG with the volume as their virtio disk, attached over NBD.  The first
# boot writes a marker at both ends of the disk, 1 MiB of random bytes off
# every cluster boundary and 64 KiB across the 8 MiB mark, each with
# conv=fsync, which the guest kernel sends as virtio FLUSH and qemu as NBD
# FLUSH (checked in qemu's trace).  The daemon is then stopped and
# restarted and a second boot reads the same places back: the guest must
# see exactly what it wrote, and the qcow2 file must hold it too.
# Round "term" uses TCP and stops blockd with SIGTERM (exit 0, image clean);
# round "kill" uses the unix socket and SIGKILLs blockd after the guest
# powered off; round "held" SIGKILLs blockd while the guest, its writes
# flushed, still has the disk attached: flushed guest writes must survive
# the crash, in the file before blockd restarts and in the guest after.
#
# The kernel and busybox .debs are fetched with apt-get download and kept in
# ${BLOCKD_TEST_CACHE:-~/.cache/blockd-tests}/debs; without network and
# without that cache the test is skipped.
source "$(dirname "$0")/lib.sh"
need qemu-system-x86_64
for tool in qemu-io apt-get dpkg-deb cpio gzip sha256sum od cmp; do
	command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/deps.sh)"
done

VM_TIMEOUT=${VM_TIMEOUT:-120}
VOLUME_SIZE=$((64 << 20))
CACHE=${BLOCKD_TEST_CACHE:-${HOME:-/tmp}/.cache/blockd-tests}/debs

# cached_in DIR GLOB: the newest file in DIR matching GLOB, or nothing.
cached_in() {
	local files
	files=$(compgen -G "$1/$2" || true)
	[[ -z $files ]] || sort -V <<<"$files" | tail -n1
}
cached() {
	cached_in "$CACHE" "$1"
}

# fetch_debs: sets KERNEL_DEB and BUSYBOX_DEB, downloading into the cache
# only what it lacks.  linux-image-cloud-amd64 is a meta package: the
# kernel is the versioned package it depends on.
fetch_debs() {
	local dl=$TMP/dl dep
	KERNEL_DEB=$(cached 'linux-image-[0-9]*-cloud-amd64_*_amd64.deb')
	BUSYBOX_DEB=$(cached 'busybox-static_*_amd64.deb')
	[[ -n $KERNEL_DEB && -n $BUSYBOX_DEB ]] && return 0
	mkdir -p "$dl" "$CACHE"
	if ! (cd "$dl" && t apt-get -q -o APT::Sandbox::User=root download \
		linux-image-cloud-amd64 busybox-static) >"$dl/apt.log" 2>&1; then
		cat "$dl/apt.log"
		skip "apt-get download failed and $CACHE has no kernel and busybox"
	fi
	dep=$(dpkg-deb -f "$dl"/linux-image-cloud-amd64_*.deb Depends | sed 's/[ ,(|].*//')
	[[ $dep == linux-image-*-cloud-amd64 ]] || fail "linux-image-cloud-amd64 depends on '$dep'"
	(cd "$dl" && t apt-get -q -o APT::Sandbox::User=root download "$dep") >>"$dl/apt.log" 2>&1 ||
		fail "apt-get download $dep: $(cat "$dl/apt.log")"
	for deb in "$dl"/*.deb; do
		cp "$deb" "$CACHE/.${deb##*/}.$$"
		mv -f "$CACHE/.${deb##*/}.$$" "$CACHE/${deb##*/}"
	done
	KERNEL_DEB=$(cached 'linux-image-[0-9]*-cloud-amd64_*_amd64.deb')
	BUSYBOX_DEB=$(cached 'busybox-static_*_amd64.deb')
	[[ -n $KERNEL_DEB && -n $BUSYBOX_DEB ]] || fail "downloaded .debs missing from $CACHE"
}

# add_module NAME: copies module NAME (uncompressed) and, first, the modules
# it depends on into the initramfs, appending them to its load order.
declare -A MODULE_ADDED
add_module() {
	local name=$1 file deps dep
	[[ -z ${MODULE_ADDED[$name]:-} ]] || return 0
	MODULE_ADDED[$name]=1
	file=$(find kernel/lib/modules \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) \
		-print -quit)
	[[ -n $file ]] || fail "module $name is not in ${KERNEL_DEB##*/}"
	case $file in
	*.ko) cp "$file" "root/modules/$name.ko" ;;
	*.ko.xz) xz -dc "$file" >"root/modules/$name.ko" ;;
	*.ko.zst) zstd -qdc "$file" >"root/modules/$name.ko" ;;
	*.ko.gz) gzip -dc "$file" >"root/modules/$name.ko" ;;
	*) fail "module file $file" ;;
	esac
	deps=$(tr '\0' '\n' <"root/modules/$name.ko" | sed -n 's/^depends=//p')
	deps=${deps%%$'\n'*}
	for dep in ${deps//,/ }; do
		add_module "$dep"
	done
	echo "$name" >>root/modules/order
}

# build_guest: KERNEL (the bzImage) and initrd.gz with busybox, vm/init,
# the virtio modules the kernel does not have built in, and pattern.bin.
build_guest() {
	local config option value
	mkdir kernel busybox root root/bin root/modules
	dpkg-deb -x "$KERNEL_DEB" kernel
	dpkg-deb -x "$BUSYBOX_DEB" busybox
	KERNEL=$(cached_in kernel/boot 'vmlinuz-*')
	config=$(cached_in kernel/boot 'config-*')
	[[ -n $KERNEL && -n $config ]] || fail "no vmlinuz or config in ${KERNEL_DEB##*/}"
	: >root/modules/order
	for option in VIRTIO_PCI VIRTIO_BLK; do
		value=$(sed -n "s/^CONFIG_$option=//p" "$config")
		case $value in
		y) ;;
		m) add_module "${option,,}" ;;
		*) fail "${KERNEL_DEB##*/} has no CONFIG_$option" ;;
		esac
	done
	cp busybox/bin/busybox root/bin/busybox
	cp "$DAEMON_TEST_DIR/vm/init" root/init
	chmod 755 root/init root/bin/busybox
	head -c $((1 << 20)) /dev/urandom >pattern.bin
	cp pattern.bin root/pattern.bin
	(cd root && find . | cpio -o -H newc --quiet) | gzip -1 >initrd.gz
}

# vm_start TAG MODE DRIVE [MARKER [HOLD]]: boots the guest in the
# background (VM_PID) in MODE on the NBD DRIVE (a qemu file= value).  Its
# console goes to TAG.console, qemu's NBD requests to TAG.trace.
# no_timer_check: on a loaded host the emulated timer can miss the kernel's
# IO-APIC check, which then panics ("timer doesn't work through IO-APIC").
vm_start() {
	local tag=$1 mode=$2 drive=$3 marker=${4:-} hold=${5:-0}
	timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -m 256 -nographic \
		-nodefaults -no-user-config -no-reboot -serial "file:$tag.console" \
		-kernel "$KERNEL" -initrd initrd.gz \
		-append "console=ttyS0 panic=-1 quiet no_timer_check blockd.mode=$mode blockd.marker=$marker blockd.hold=$hold" \
		-drive "file=$drive,format=raw,if=virtio,cache=none" \
		-trace nbd_send_request -D "$tag.trace" </dev/null >"$tag.qemu" 2>&1 &
	VM_PID=$!
}

# vm_report TAG: the guest's "BLOCKD-VM " lines so far, without that
# prefix, into TAG.report.
vm_report() {
	tr -d '\r' 2>/dev/null <"$1.console" | grep -o 'BLOCKD-VM .*' |
		sed 's/^BLOCKD-VM //' >"$1.report" || true
}

# vm_fail TAG WHY: fails showing qemu's output and the guest's console.
vm_fail() {
	echo "--- qemu ($1)" >&2
	cat "$1.qemu" >&2
	echo "--- guest console ($1, last 30 lines)" >&2
	tr -d '\r' 2>/dev/null <"$1.console" | tail -n 30 >&2
	fail "$2"
}

# vm_wait TAG: qemu exits 0 and the guest's last report line is "done".
vm_wait() {
	local rc=0
	wait "$VM_PID" || rc=$?
	VM_PID=
	vm_report "$1"
	[[ $rc == 0 && $(tail -n1 "$1.report") == "done" ]] ||
		vm_fail "$1" "guest $1 did not finish (qemu status $rc)"
}

# vm_until_holding TAG: waits until the guest reports "holding", qemu still
# running; the trace so far is copied to TAG.trace.held.
vm_until_holding() {
	while :; do
		vm_report "$1"
		[[ $(tail -n1 "$1.report") != holding ]] || break
		kill -0 "$VM_PID" 2>/dev/null || vm_fail "$1" "guest $1 ended before it held"
		sleep 0.1
	done
	cp "$1.trace" "$1.trace.held"
}

# vm_kill: ends a held guest.
vm_kill() {
	kill -TERM "$VM_PID"
	wait "$VM_PID" || true
	VM_PID=
}

# expect_report TAG: TAG.report must equal stdin.
expect_report() {
	if ! diff -u - "$1.report" >"$1.diff"; then
		cat "$1.diff" >&2
		fail "guest report $1 (- expected, + guest)"
	fi
}

# check_flushed TRACE: qemu sent an NBD FLUSH after the guest's last write.
check_flushed() {
	local writes flushed
	writes=$(grep -c 'type = 1 (write)' "$1" || true)
	((writes > 0)) || fail "$1: qemu sent no NBD writes"
	flushed=$(awk '/type = 1 \(write\)/ { f = 0 } /type = 3 \(flush\)/ { f = 1 }
		END { print f + 0 }' "$1")
	[[ $flushed == 1 ]] ||
		fail "$1: no NBD FLUSH after the last of $writes writes (does blockd offer NBD_FLAG_SEND_FLUSH?)"
}

# check_image IMAGE MARKER: the qcow2 file itself holds what the guest wrote.
check_image() {
	local img=$1 marker=$2 out
	t qemu-img convert -f qcow2 -O raw "$img" disk.raw
	[[ $(stat -c %s disk.raw) == "$VOLUME_SIZE" ]] || fail "$img: virtual size changed"
	[[ $(dd if=disk.raw bs=512 count=1 2>/dev/null | head -n1 | tr -d '\0') == \
		"BLOCKD-VM-MARKER $marker" ]] || fail "$img: no marker in sector 0"
	[[ $(dd if=disk.raw bs=512 skip=$((VOLUME_SIZE / 512 - 1)) 2>/dev/null | head -n1 |
		tr -d '\0') == "BLOCKD-VM-MARKER $marker" ]] || fail "$img: no marker in the last sector"
	cmp <(dd if=disk.raw bs=512 skip=2049 count=2048 2>/dev/null) pattern.bin ||
		fail "$img: the 1 MiB pattern differs"
	out=$(t qemu-io -f qcow2 -r -c "read -P 0x5a $((16376 * 512)) 64k" \
		-c "read -P 0 $((32 << 20)) 1M" "$img" 2>&1) || fail "$img: qemu-io: $out"
	! grep -q 'verification failed' <<<"$out" || fail "$img: qemu-io: $out"
}

# round TAG STOP TRANSPORT: the write boot over TRANSPORT (tcp|unix); blockd
# stopped by STOP: "term" (SIGTERM after the guest powered off), "kill"
# (SIGKILL after the guest powered off) or "held" (SIGKILL while the guest,
# its writes flushed, still has the disk attached); the file checked;
# blockd restarted; the read boot; blockd stopped cleanly.
round() {
	local tag=$1 stop=$2 transport=$3 dir=$TMP/$1 marker rc
	local trace=$1-write.trace last="done"
	marker=$tag-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
	new_volume "$dir" vol "$VOLUME_SIZE"
	start_blockd "$dir"
	if [[ $stop == held ]]; then
		vm_start "$tag-write" write "$("${transport}_uri" vol)" "$marker" 1
		vm_until_holding "$tag-write"
		kill_blockd
		vm_kill
		trace=$tag-write.trace.held
		last=holding
	else
		vm_start "$tag-write" write "$("${transport}_uri" vol)" "$marker"
		vm_wait "$tag-write"
	fi
	expect_report "$tag-write" <<-EOF
		size $VOLUME_SIZE
		wrote-marker $marker
		wrote-pattern $PATTERN_SUM
		wrote-zeds $ZEDS_SUM
		$last
	EOF
	check_flushed "$trace"

	case $stop in
	term)
		stop_blockd
		qemu_check "$dir/volumes/vol.qcow2"
		;;
	kill)
		kill_blockd
		;;
	esac
	if [[ $stop != term ]]; then
		# blockd repairs a dirty image when it starts; a clean one may
		# only leak clusters (qemu-img check status 3), as qemu's may.
		if [[ $(dirty_bit "$dir/volumes/vol.qcow2") == 0 ]]; then
			rc=0
			t qemu-img check "$dir/volumes/vol.qcow2" >"$tag-check.txt" 2>&1 || rc=$?
			[[ $rc == 0 || $rc == 3 ]] ||
				fail "qemu-img check after SIGKILL (status $rc): $(cat "$tag-check.txt")"
		fi
	fi
	check_image "$dir/volumes/vol.qcow2" "$marker"

	start_blockd "$dir"
	vm_start "$tag-read" read "$("${transport}_uri" vol)"
	vm_wait "$tag-read"
	expect_report "$tag-read" <<-EOF
		size $VOLUME_SIZE
		read-head BLOCKD-VM-MARKER $marker
		read-tail BLOCKD-VM-MARKER $marker
		read-pattern $PATTERN_SUM
		read-zeds $ZEDS_SUM
		read-unwritten $ZERO_SUM
		done
	EOF
	stop_blockd
	qemu_check "$dir/volumes/vol.qcow2"
	check_image "$dir/volumes/vol.qcow2" "$marker"
}

VM_PID=
# A guest still running on exit: timeout passes SIGTERM on to qemu.
vm_stop() {
	[[ -z $VM_PID ]] || kill -TERM "$VM_PID" 2>/dev/null || true
}
at_exit vm_stop
fetch_debs
build_guest
PATTERN_SUM=$(sha256sum <pattern.bin | cut -d' ' -f1)
ZEDS_SUM=$(head -c 65536 /dev/zero | tr '\0' Z | sha256sum | cut -d' ' -f1)
ZERO_SUM=$(head -c $((1 << 20)) /dev/zero | sha256sum | cut -d' ' -f1)

round term term tcp
round kill kill unix
round held held tcp
echo "vm_boot: guest data survived a SIGTERM restart and SIGKILL crashes (${KERNEL##*/})"
