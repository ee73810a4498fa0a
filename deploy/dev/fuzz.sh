#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a short, bounded time each
# (SIGIL_FUZZTIME, default 10s; SIGIL_FUZZPARALLEL workers, default 2), one
# target after the other, and stops at the first failure. When a target
# finds a failing input, go test writes it under the package's
# testdata/fuzz/<FuzzName>/: commit that file with the fix, and from then on
# plain go test runs it as a regression test.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. deploy/dev/lib.sh

fuzztime=${SIGIL_FUZZTIME:-10s}
parallel=${SIGIL_FUZZPARALLEL:-2}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# inputs DIR: the files under DIR, sorted, one per line.
inputs() {
	if [ -d "$1" ]; then find "$1" -type f | LC_ALL=C sort; fi
}

# Packages with fuzz targets: those whose tests define a Fuzz function.
dirs=$(grep -rl --include='*_test.go' --exclude-dir=.git --exclude-dir=.dev '^func Fuzz' . | xargs -r -n1 dirname | sort -u || true)

count=0
for dir in $dirs; do
	pkg=./${dir#./}
	names=$(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	for name in $names; do
		corpus=$dir/testdata/fuzz/$name
		before=$(inputs "$corpus")
		status=0
		# Minimising each new input for long would eat most of a short
		# run; a failing input is written either way.
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 2s \
			-parallel "$parallel" "$pkg" >"$log" 2>&1 || status=$?
		written=$(LC_ALL=C comm -13 <(echo "$before") <(inputs "$corpus"))
		execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
		count=$((count + 1))
		if [ "$status" = 0 ]; then
			say "fuzz $pkg $name: ok, ${execs:-0} execs in $fuzztime"
			continue
		fi
		if [ -z "$written" ] && grep -qx '[[:space:]]*context deadline exceeded' "$log" &&
			! grep -q -e 'Failing input written' -e '^[[:space:]]*--- FAIL: .*/' "$log"; then
			# Go 1.26's fuzzing coordinator can report its own -fuzztime
			# deadline as a failure (golang/go#75804); nothing was found.
			say "fuzz $pkg $name: ok, ${execs:-0} execs in $fuzztime (go test reported its own deadline; no failing input)"
			continue
		fi
		cat "$log" >&2
		if [ -n "$written" ]; then
			say "fuzz $pkg $name: FAILED on a new input, written to:"
			printf '%s\n' "$written" | sed 's/^/    /' >&2
			say "commit it with the fix: go test then runs it as a regression test (go test -run '$name' $pkg)"
		else
			say "fuzz $pkg $name: FAILED without writing a new input (a build error, or a committed input under $corpus that fails: go test -run '$name' $pkg)"
		fi
		exit 1
	done
done
if [ "$count" = 0 ]; then
	say "no fuzz targets found"
	exit 1
fi
say "fuzzed $count targets for $fuzztime each: no failures"
