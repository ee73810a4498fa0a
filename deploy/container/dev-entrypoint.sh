#!/usr/bin/env bash
# Entrypoint of the sigild dev image. On first start it fills the volume at
# $SIGIL_DATA_DIR (default /var/lib/sigil) with what a sigild reachable from
# outside its container needs, each file created once and kept:
#
#   softhsm/     a SoftHSM2 token labelled $SIGIL_HSM_TOKEN_LABEL (default
#                sigil-dev) and its generated user PIN in softhsm/pin
#   audit-salt   32 random bytes (hex) keying the audit log's HMACs
#   tls/         a self-signed certificate (cert.pem) and its key (key.pem)
#                for the names in $SIGIL_DEV_TLS_SANS
#   bearer-token a random bearer token; the caller is "token:dev"
#   auth.yaml    the SHA-256 of that token
#   policy.yaml  a permissive policy: token:dev may do everything
#
# Then it execs sigild with TLS and token authentication (not --dev, which
# listens on loopback only). Secrets are never printed: read the bearer
# token from the volume. Every file is private to the container's user.
# Any SIGIL_* variable set by the caller wins over the generated default.
set -euo pipefail
umask 077

data=${SIGIL_DATA_DIR:-/var/lib/sigil}
label=${SIGIL_HSM_TOKEN_LABEL:-sigil-dev}
sans=${SIGIL_DEV_TLS_SANS:-DNS:localhost,IP:127.0.0.1,IP:::1,DNS:sigild}
new_token=${SIGIL_DEV_NEW_TOKEN:-/usr/local/lib/sigil/new-token.sh}

say() { printf 'sigil-dev: %s\n' "$*" >&2; }

# random_hex N prints N random bytes as hex.
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# publish TMP FILE renames the finished TMP to FILE, so that a crash never
# leaves a half-written FILE that a later start would take as done.
publish() { mv -f "$1" "$2"; }

if [ ! -d "$data" ] || [ ! -w "$data" ]; then
	say "$data must be a directory writable by UID $(id -u) (mount a volume there)"
	exit 1
fi

# The HSM token and its PIN.
SOFTHSM2_CONF=$("$new_token" "$data/softhsm" "$label")
export SOFTHSM2_CONF

if [ ! -s "$data/audit-salt" ]; then
	random_hex 32 >"$data/audit-salt.tmp"
	publish "$data/audit-salt.tmp" "$data/audit-salt"
	say "created an audit salt"
fi

if [ ! -s "$data/tls/cert.pem" ] || [ ! -s "$data/tls/key.pem" ]; then
	mkdir -p "$data/tls"
	if ! out=$(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-days 825 -subj /CN=sigil-dev -addext "subjectAltName=$sans" \
		-keyout "$data/tls/key.pem.tmp" -out "$data/tls/cert.pem.tmp" 2>&1); then
		say "openssl could not make the TLS certificate: $out"
		exit 1
	fi
	publish "$data/tls/key.pem.tmp" "$data/tls/key.pem"
	publish "$data/tls/cert.pem.tmp" "$data/tls/cert.pem"
	say "created a self-signed TLS certificate for $sans"
fi

# The token and the hash that authenticates it are made together.
if [ ! -s "$data/bearer-token" ] || [ ! -s "$data/auth.yaml" ]; then
	token=$(random_hex 32)
	hash=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
	printf '%s\n' "$token" >"$data/bearer-token.tmp"
	unset token
	cat >"$data/auth.yaml.tmp" <<YAML
# Written by the sigild dev image: the SHA-256 of the token in bearer-token.
tokens:
  dev: $hash
YAML
	publish "$data/auth.yaml.tmp" "$data/auth.yaml"
	publish "$data/bearer-token.tmp" "$data/bearer-token"
	say "created a bearer token for token:dev in $data/bearer-token"
fi

if [ ! -s "$data/policy.yaml" ]; then
	cat >"$data/policy.yaml.tmp" <<'YAML'
# Written by the sigild dev image: the development token may manage and use
# every key, and have SignJWT sign any claims (within the default lifetime).
rules:
  - identities: ["token:dev"]
    keys: ["*"]
    allow: ["admin", "*"]
    jwt: {}
YAML
	publish "$data/policy.yaml.tmp" "$data/policy.yaml"
	say "created a permissive policy in $data/policy.yaml"
fi

export SIGIL_HSM_TOKEN_LABEL=$label
export SIGIL_HSM_PIN_FILE=${SIGIL_HSM_PIN_FILE:-$data/softhsm/pin}
export SIGIL_AUDIT_SALT_FILE=${SIGIL_AUDIT_SALT_FILE:-$data/audit-salt}
export SIGIL_TLS_CERT=${SIGIL_TLS_CERT:-$data/tls/cert.pem}
export SIGIL_TLS_KEY=${SIGIL_TLS_KEY:-$data/tls/key.pem}
export SIGIL_AUTH_CONFIG=${SIGIL_AUTH_CONFIG:-$data/auth.yaml}
export SIGIL_POLICY_FILE=${SIGIL_POLICY_FILE:-$data/policy.yaml}
say "bearer token: $data/bearer-token; CA certificate: $data/tls/cert.pem"
exec sigild "$@"
