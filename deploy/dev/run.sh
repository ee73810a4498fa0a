#!/usr/bin/env bash
# Starts a development sigild: installs SoftHSM2 if missing, makes a
# throwaway token with a generated PIN under .dev/ (git-ignored), uses the
# Postgres at $SIGIL_DATABASE_URL or 127.0.0.1:5432 (starting a local one if
# none answers), then runs sigild --dev on 127.0.0.1:8380 in the foreground.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. deploy/dev/lib.sh

dev=$root/.dev
mkdir -p "$dev"
ensure_softhsm
ensure_pg_client

# The token: created once, reused by later runs so keys persist.
"$root/softhsm/new-token.sh" "$dev/softhsm" sigil-dev >/dev/null
export SOFTHSM2_CONF=$dev/softhsm/softhsm2.conf

# The database.
admin_url=${SIGIL_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
started_pg=
if [ -n "${SIGIL_DATABASE_URL:-}" ]; then
	db_url=$SIGIL_DATABASE_URL
	pg_answers "$db_url" || { echo "no Postgres answers at $(redact "$db_url")" >&2; exit 1; }
else
	if ! pg_answers "$admin_url"; then
		start_local_pg "$dev/postgres" 5432
	fi
	if [ -f "$dev/postgres/postmaster.pid" ]; then
		started_pg=1
		PG_CTL_STOP=${PG_CTL_STOP:-pg_ctl -D $dev/postgres stop (as the postgres user)}
	fi
	if [ "$(psql "$admin_url" -tAc "select 1 from pg_database where datname = 'sigil'")" != 1 ]; then
		psql "$admin_url" -qc 'create database sigil' >/dev/null
	fi
	db_url=postgres://postgres@127.0.0.1:5432/sigil?sslmode=disable
fi

say "building sigild and sigil into bin/"
go build -o bin/ ./cmd/sigild ./cmd/sigil

listen=${SIGIL_LISTEN:-127.0.0.1:8380}
cli=bin/sigil
if [ "$listen" != 127.0.0.1:8380 ]; then cli="bin/sigil --addr http://$listen"; fi
cat >&2 <<MSG

Sigil (development mode, no authentication)
  server     http://$listen   (Connect, gRPC, gRPC-Web; /healthz, /readyz)
  HSM        SoftHSM2 token "sigil-dev" in .dev/softhsm (PIN in .dev/softhsm/pin)
  database   $(redact "$db_url")
  CLI        $cli create-key demo; echo hi | $cli encrypt --base64 demo
  stop       Ctrl-C${started_pg:+ (then stop the local Postgres: $PG_CTL_STOP)}
  reset      rm -rf .dev   (deletes the token and every key in it)

MSG
# sigild takes a URL with a password only from a private file, so the URL
# goes through one under .dev/ rather than argv or the environment.
unset SIGIL_DATABASE_URL
(umask 077 && printf '%s\n' "$db_url" >"$dev/database-url")
chmod 600 "$dev/database-url"
export SIGIL_DATABASE_URL_FILE=$dev/database-url
exec bin/sigild --dev --listen "$listen" \
	--hsm-module "$SIGIL_HSM_MODULE" --hsm-token-label sigil-dev --hsm-pin-file "$dev/softhsm/pin"
