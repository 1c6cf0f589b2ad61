#!/usr/bin/env bash
# Installs the Debian 12 packages blockd needs to build and test, if any is
# missing.  Runs apt-get as root (or through sudo).
set -euo pipefail

packages=(
	build-essential cmake ninja-build pkg-config clang clang-format
	libclang-rt-14-dev
	liburing-dev libfuse3-dev fuse3 libzstd-dev libxxhash-dev zlib1g-dev
	libcriterion-dev libjansson-dev libmicrohttpd-dev libcurl4-openssl-dev libnbd-dev
	qemu-utils
	libnbd-bin python3-libnbd nbdkit fio qemu-system-x86 cpio e2fsprogs
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
