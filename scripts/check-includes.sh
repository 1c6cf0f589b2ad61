#!/usr/bin/env bash
# Checks the include rule: the #include lines of each folder name only its
# own headers and the public headers (LIB/include/) of the libraries below
# it, so that no folder reaches into another's private headers and the
# folders form no cycle.  A folder may use only folders listed before it:
#
#   qcow, proto   nothing of ours
#   common        qcow, proto (the public headers; none is used today)
#   blockd        qcow, proto, common
#   tools         qcow, common        (blockctl)
#   fuse          qcow, common        (blockfs)
#   tests/...     anything: a test may look inside what it tests
#
# #include "x" resolves as the compiler resolves it: beside the including
# file first, then in the include/ folders of the folder's own library and
# of the libraries it may use; it must resolve, and to one file only.
# #include <x> naming one of our public headers is held to the same rule.
# Also checks that CMake targets export (PUBLIC or INTERFACE) nothing but
# include/ folders.  Prints each violation; exit status 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."

order=(qcow proto common blockd tools fuse)
declare -A uses=(
	[qcow]=""
	[proto]=""
	[common]="qcow proto"
	[blockd]="qcow proto common"
	[tools]="qcow common"
	[fuse]="qcow common"
)
bad=0

violation() {
	echo "$1"
	bad=1
}

# The rule itself: each folder uses only folders before it, so no cycle.
declare -A rank=()
for i in "${!order[@]}"; do
	rank[${order[$i]}]=$i
done
for folder in "${order[@]}"; do
	for lib in ${uses[$folder]}; do
		((${rank[$lib]:-999} < ${rank[$folder]})) ||
			violation "scripts/check-includes.sh: $folder may use $lib, which is not listed before it"
	done
done

# Every tracked file, and the tracked paths of each file name.
declare -A tracked=() by_name=()
while IFS= read -r path; do
	tracked[$path]=1
	by_name[${path##*/}]+="$path "
done < <(git ls-files)

# Whether path (relative to the top) is something folder may include.
allowed() {
	local folder=$1 path=$2 lib
	[[ $path == "$folder"/* ]] && return 0
	for lib in ${uses[$folder]}; do
		[[ $path == "$lib"/include/* ]] && return 0
	done
	return 1
}

# dir/name without "." and ".." parts, into norm (no subprocess: this runs per include).
normalize() {
	local rest="$1/$2/" part
	local -a out=()
	while [[ -n $rest ]]; do
		part=${rest%%/*}
		rest=${rest#*/}
		case $part in
		'' | .) ;;
		..) if ((${#out[@]} > 0)); then unset 'out[-1]'; else out+=(..); fi ;;
		*) out+=("$part") ;;
		esac
	done
	norm=
	for part in "${out[@]}"; do
		norm+=${norm:+/}$part
	done
}

# check_include FILE FOLDER NAME QUOTED: one #include line of FILE.
check_include() {
	local f=$1 folder=$2 name=$3 quoted=$4 lib others shown
	local -a hits=()
	if [[ $quoted == 1 ]]; then
		shown="\"$name\""
	else
		shown="<$name>"
	fi
	normalize "${f%/*}" "$name"
	if [[ $quoted == 1 && -n ${tracked[$norm]:-} ]]; then
		allowed "$folder" "$norm" ||
			violation "$f: #include $shown is $norm, which $folder/ may not use"
		return
	fi
	for lib in "$folder" ${uses[$folder]}; do
		[[ -n ${tracked[$lib/include/$name]:-} ]] && hits+=("$lib/include/$name")
	done
	if ((${#hits[@]} == 1)); then
		return
	fi
	if ((${#hits[@]} > 1)); then
		violation "$f: #include $shown is ambiguous: ${hits[*]}"
		return
	fi
	others=${by_name[${name##*/}]:-}
	if [[ $quoted == 0 && -z $others ]]; then
		return # a system header
	fi
	if [[ $quoted == 0 && " $others" == *" $folder/"* ]]; then
		violation "$f: #include $shown: the folder's own headers are included with quotes"
	elif [[ -n $others ]]; then
		violation "$f: #include $shown is ${others% }: neither $folder/'s own nor a public header of what it may use (${uses[$folder]:-none})"
	else
		violation "$f: #include $shown is in no folder $folder/ may use (system headers go in <>)"
	fi
}

while IFS= read -r f; do
	folder=${f%%/*}
	[[ $folder != tests ]] || continue
	if [[ $f != */* || -z ${uses[$folder]+set} ]]; then
		violation "$f: no include rule for the folder $folder (add one to scripts/check-includes.sh)"
	fi
done < <(git ls-files '*.c' '*.h')

# Every #include line of every C file outside tests/, read in one pass.
re_quoted='^([^:]+):[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]+)"'
re_angle='^([^:]+):[[:space:]]*#[[:space:]]*include[[:space:]]*<([^>]+)>'
while IFS= read -r line; do
	if [[ $line =~ $re_quoted ]]; then
		quoted=1
	elif [[ $line =~ $re_angle ]]; then
		quoted=0
	else
		continue
	fi
	f=${BASH_REMATCH[1]}
	folder=${f%%/*}
	[[ $folder != tests && $f == */* && -n ${uses[$folder]+set} ]] || continue
	check_include "$f" "$folder" "${BASH_REMATCH[2]}" "$quoted"
done < <(git ls-files -z '*.c' '*.h' | xargs -0 grep -H -E '^[[:space:]]*#[[:space:]]*include')

# Exported include paths: include/ folders only.  Test helper libraries
# under tests/ are for tests, which may include anything.
while IFS= read -r cm; do
	[[ $cm == tests/* ]] && continue
	while IFS= read -r call; do
		mode=
		for tok in ${call#*(}; do
			tok=${tok%)}
			case $tok in
			PUBLIC | INTERFACE) mode=export ;;
			PRIVATE) mode= ;;
			SYSTEM | BEFORE | AFTER) ;;
			*)
				[[ $mode != export || $tok == */include ]] ||
					violation "$cm: exports $tok: only include/ folders may be public"
				;;
			esac
		done
	done < <(tr '\n' ' ' <"$cm" | grep -o 'target_include_directories([^)]*)' || true)
done < <(git ls-files 'CMakeLists.txt' '*/CMakeLists.txt')

exit $bad
