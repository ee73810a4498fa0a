#!/usr/bin/env bash
# new-token.sh DIR LABEL: creates a throwaway SoftHSM2 token in DIR with a
# generated user PIN, unless DIR already holds one. Writes DIR/softhsm2.conf
# (point SOFTHSM2_CONF at it), DIR/tokens/ and DIR/pin (mode 0600). Prints
# the config path. The PINs are never printed.
set -euo pipefail
dir=${1:?usage: new-token.sh DIR LABEL}
label=${2:?usage: new-token.sh DIR LABEL}
umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf=$dir/softhsm2.conf
if [ ! -f "$conf" ]; then
	cat >"$conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
fi
export SOFTHSM2_CONF=$conf
if ! softhsm2-util --show-slots 2>/dev/null | grep -Eq "Label:[[:space:]]*$label[[:space:]]*\$"; then
	pin=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
	so_pin=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
	printf '%s\n' "$pin" >"$dir/pin"
	softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$so_pin" >/dev/null
	echo "created SoftHSM2 token \"$label\" in $dir" >&2
fi
echo "$conf"
