#!/usr/bin/env bash
# Runs every check and test: buf lint, generated code up to date, gofmt,
# go vet, and go test against a real SoftHSM2 and a real Postgres. Installs
# SoftHSM2 if missing and starts a throwaway Postgres if none answers at
# $SIGIL_TEST_DATABASE_URL (default 127.0.0.1:5432). Tests create and drop
# their own tokens and databases.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. deploy/dev/lib.sh

work=$(mktemp -d)
cleanup() {
	if [ -n "${PG_CTL_STOP:-}" ]; then $PG_CTL_STOP -m fast >/dev/null 2>&1 || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

ensure_softhsm
ensure_pg_client
export SIGIL_TEST_DATABASE_URL=${SIGIL_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
if ! pg_answers "$SIGIL_TEST_DATABASE_URL"; then
	say "no Postgres answers at $(redact "$SIGIL_TEST_DATABASE_URL")"
	start_local_pg "$work/postgres" 55432
	SIGIL_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable
fi

say "building buf, grpcurl and the protoc plugins"
bin=$work/bin
(cd tools && go build -o "$bin/" github.com/bufbuild/buf/cmd/buf github.com/fullstorydev/grpcurl/cmd/grpcurl)
go build -o "$bin/" google.golang.org/protobuf/cmd/protoc-gen-go connectrpc.com/connect/cmd/protoc-gen-connect-go
export PATH=$bin:$PATH

say "buf lint"
buf lint

say "checking that gen/ matches the .proto files"
mkdir -p "$work/regen"
cp -r buf.yaml buf.gen.yaml proto "$work/regen/"
(cd "$work/regen" && buf generate)
if ! diff -r "$work/regen/gen" gen; then
	echo "gen/ is out of date: run buf generate and commit the result" >&2
	exit 1
fi

say "gofmt and go vet"
unformatted=$(gofmt -l $(find . -name "*.go" -not -path "./.dev/*"))
if [ -n "$unformatted" ]; then
	echo "not gofmt-ed:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...

say "go test (SoftHSM2 at $SIGIL_HSM_MODULE, Postgres at $(redact "$SIGIL_TEST_DATABASE_URL"))"
export SIGIL_TEST_REQUIRE=1 SIGIL_TEST_HSM_MODULE=$SIGIL_HSM_MODULE
go test -count=1 -race -timeout 20m "$@" ./...

say "soak without the race detector, so that sigild's RSS is checked (${SIGIL_SOAK_DURATION:-20s})"
go test -count=1 -timeout 20m -run 'TestSoak$' ./cmd/sigild

say "fuzzing each target for ${SIGIL_FUZZTIME:-10s}"
./deploy/dev/fuzz.sh
