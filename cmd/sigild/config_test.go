package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8380": true, "127.0.0.2:1": true, "localhost:8380": true, "[::1]:8380": true,
		":8380": false, "0.0.0.0:8380": false, "[::]:8380": false, "10.0.0.1:8380": false,
		"example.com:8380": false, "127.0.0.1": false, "": false,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	env := map[string]string{
		"SIGIL_LISTEN": "127.0.0.1:9999", "SIGIL_DATABASE_URL": "postgres://db/x", "SIGIL_HSM_MODULE": "/lib/p11.so",
		"SIGIL_HSM_TOKEN_LABEL": "tok", "SIGIL_HSM_PIN_FILE": "/run/pin", "SIGIL_DEV": "1", "SIGIL_LOG_LEVEL": "debug",
	}
	c, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{listen: "127.0.0.1:9999", databaseURL: "postgres://db/x", hsmModule: "/lib/p11.so", hsmTokenLabel: "tok",
		hsmPINFile: "/run/pin", hsmSessions: 8, dev: true, logLevel: "debug", schedule: 30 * time.Second, pendingGrace: 10 * time.Minute}
	if c != want {
		t.Fatalf("config = %+v\nwant %+v", c, want)
	}
	// Flags win over the environment.
	c, err = parseConfig([]string{"--listen", "localhost:1", "--hsm-token-label", "other"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil || c.listen != "localhost:1" || c.hsmTokenLabel != "other" {
		t.Fatalf("flags over env: %+v, %v", c, err)
	}
}

func TestConfigRefusals(t *testing.T) {
	none := func(string) string { return "" }
	_, err := parseConfig(nil, none, io.Discard)
	for _, want := range []string{"--database-url", "--hsm-token-label", "--hsm-pin-file", "--dev"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("empty config: error %v does not mention %s", err, want)
		}
	}
	base := []string{"--dev", "--database-url", "x", "--hsm-token-label", "t", "--hsm-pin-file", "p"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(base, "--tls-cert", "c"), "--tls-key"},
		{append(base, "--hsm-max-sessions", "0"), "--hsm-max-sessions"},
		{append(base, "--listen", ":8380"), "non-loopback"},
		{append(base, "extra"), "unexpected argument"},
	} {
		if _, err := parseConfig(tc.args, none, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
	if _, err := parseConfig(base, none, io.Discard); err != nil {
		t.Fatalf("a good config: %v", err)
	}
}
