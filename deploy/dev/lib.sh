# Shared by run.sh and test.sh: install and start what Sigil needs locally.
# shellcheck shell=bash

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=
apt_install() {
	if [ -z "$apt_updated" ]; then
		say "apt-get update"
		as_root apt-get update -qq
		apt_updated=1
	fi
	say "installing $*"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# softhsm_module prints the path of the SoftHSM2 PKCS#11 library, if any.
softhsm_module() {
	local p
	for p in "${SIGIL_HSM_MODULE:-}" /usr/lib/softhsm/libsofthsm2.so \
		/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
		if [ -n "$p" ] && [ -f "$p" ]; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# ensure_softhsm installs SoftHSM2 (and pkcs11-tool) when missing.
ensure_softhsm() {
	if ! softhsm_module >/dev/null || ! command -v softhsm2-util >/dev/null; then
		apt_install softhsm2
	fi
	if ! command -v pkcs11-tool >/dev/null; then
		apt_install opensc || say "opensc not installed; pkcs11-tool cross-checks will be skipped"
	fi
	export SIGIL_HSM_MODULE
	SIGIL_HSM_MODULE=$(softhsm_module)
}

ensure_pg_client() {
	if ! command -v pg_isready >/dev/null || ! command -v psql >/dev/null; then
		apt_install postgresql-client
	fi
}

# pg_answers URL: true if a Postgres server answers at URL.
pg_answers() {
	pg_isready -q -t 3 -d "$1" >/dev/null 2>&1
}

# start_local_pg DIR PORT: starts a throwaway Postgres cluster in DIR on
# 127.0.0.1:PORT with trust authentication, using the machine's packages.
start_local_pg() {
	local dir=$1 port=$2 bin
	bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
	if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
		apt_install postgresql
		bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
	fi
	local run=()
	if [ "$(id -u)" = 0 ]; then
		run=(runuser -u postgres --)
		mkdir -p "$dir"
		chown postgres "$dir"
		chmod o+x "$(dirname "$dir")" # the server runs as postgres
	fi
	if [ ! -f "$dir/PG_VERSION" ]; then
		say "initialising a local Postgres in $dir"
		"${run[@]}" "$bin/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
	fi
	say "starting a local Postgres on 127.0.0.1:$port"
	"${run[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
		-o "-c listen_addresses=127.0.0.1 -p $port -k $dir" start >/dev/null
	PG_CTL_STOP="${run[*]} $bin/pg_ctl -D $dir stop"
}

# redact URL: the URL with any password replaced by ***.
redact() {
	printf '%s' "$1" | sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#'
}
