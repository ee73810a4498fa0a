package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sigil-kms/sigil/hsm"
)

func TestQuantile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		d := make([]time.Duration, len(v))
		for i, x := range v {
			d[i] = time.Duration(x) * time.Millisecond
		}
		return d
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"median of four", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p50 of 100", hundred, 0.50, 50 * time.Millisecond},
		{"p90 of 100", hundred, 0.90, 90 * time.Millisecond},
		{"p99 of 100", hundred, 0.99, 99 * time.Millisecond},
		{"max", hundred, 1, 100 * time.Millisecond},
		{"tiny q", hundred, 0.0001, 1 * time.Millisecond},
		{"p99 of 10", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
	} {
		if got := quantile(tc.sorted, tc.q); got != tc.want {
			t.Errorf("%s: quantile(%v) = %v, want %v", tc.name, tc.q, got, tc.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	lat := []time.Duration{4 * time.Millisecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond}
	r := summarize("SignES256", "server", 4, lat, map[string]int{"unavailable": 2, "check": 1}, "boom", 2*time.Second)
	if r.Ops != 4 || r.OpsPerSec != 2 || r.P50 != 2 || r.P99 != 4 || r.Max != 4 || r.Errors != 3 {
		t.Fatalf("summarize = %+v", r)
	}
	if h := r.human(); !strings.Contains(h, "errors 3 (check=1 unavailable=2)") {
		t.Fatalf("human = %q", h)
	}
	var b strings.Builder
	if err := r.write(&b); err != nil || !strings.HasPrefix(b.String(), `{"rpc":"SignES256","mode":"server","concurrency":4,"ops":4,`) ||
		strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("write = %q, %v", b.String(), err)
	}
}

func TestParseArgs(t *testing.T) {
	server := []string{"-addr", "http://127.0.0.1:8380", "-token-file", "tok", "-rpc", "Encrypt1K"}
	raw := []string{"-raw", "-hsm-token-label", "bench", "-hsm-pin-file", "pin", "-rpc", "SignPS256", "-concurrency", "64", "-duration", "2s"}
	for _, tc := range []struct {
		name string
		args []string
		bad  string // a part of the error, or "" for none
	}{
		{"server", server, ""},
		{"raw", raw, ""},
		{"count", append(server, "-count", "100"), ""},
		{"ipv6 loopback", []string{"-addr", "http://[::1]:1", "-token-file", "t", "-rpc", "SignJWTES256"}, ""},
		{"https remote", []string{"-addr", "https://sigil.example:8443", "-token-file", "t", "-rpc", "SignES256"}, ""},
		{"unknown rpc", []string{"-addr", "http://127.0.0.1:1", "-token-file", "t", "-rpc", "Encrypt"}, "-rpc"},
		{"no rpc", []string{"-addr", "http://127.0.0.1:1", "-token-file", "t"}, "-rpc"},
		{"zero concurrency", append(server, "-concurrency", "0"), "-concurrency"},
		{"huge concurrency", append(server, "-concurrency", "100000"), "-concurrency"},
		{"zero duration", append(server, "-duration", "0s"), "-duration"},
		{"negative count", append(server, "-count", "-1"), "-count"},
		{"no addr", []string{"-token-file", "t", "-rpc", "Encrypt1K"}, "-addr is required"},
		{"no token", []string{"-addr", "http://127.0.0.1:1", "-rpc", "Encrypt1K"}, "-token-file"},
		{"remote http", []string{"-addr", "http://10.0.0.1:8380", "-token-file", "t", "-rpc", "Encrypt1K"}, "loopback"},
		{"bad scheme", []string{"-addr", "ftp://127.0.0.1:1", "-token-file", "t", "-rpc", "Encrypt1K"}, "scheme"},
		{"raw without pin", []string{"-raw", "-hsm-token-label", "b", "-rpc", "Encrypt1K"}, "-hsm-pin-file"},
		{"raw zero sessions", append(raw, "-hsm-max-sessions", "0"), "-hsm-max-sessions"},
		{"stray argument", append(server, "extra"), "unexpected argument"},
	} {
		c, err := parseArgs(tc.args, io.Discard)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.bad)
		}
		if tc.name == "raw" && (c.mode() != "raw" || c.concurrency != 64 || c.duration != 2*time.Second || c.hsmSessions != 8) {
			t.Errorf("raw: parsed %+v", c)
		}
	}
}

func TestErrorCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{connect.NewError(connect.CodeUnavailable, errors.New("x")), "unavailable"},
		{connect.NewError(connect.CodePermissionDenied, errors.New("x")), "permission_denied"},
		{checkFailed("bad %d", 1), "check"},
		{context.DeadlineExceeded, "deadline"},
		{errors.Join(errors.New("pkcs11"), hsm.ErrUnavailable), "hsm_unavailable"},
		{errors.New("mystery"), "unknown"},
	} {
		if got := errorCode(tc.err); got != tc.want {
			t.Errorf("errorCode(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestDriveCount(t *testing.T) {
	var calls atomic.Int64
	op := func(ctx context.Context, worker, seq int) error {
		if calls.Add(1)%10 == 0 {
			return checkFailed("every tenth")
		}
		return nil
	}
	lat, codes, first, _ := drive(context.Background(), 8, time.Minute, 1000, op)
	if calls.Load() != 1000 || len(lat) != 900 || codes["check"] != 100 || first == "" {
		t.Fatalf("calls %d, ok %d, codes %v, first %q", calls.Load(), len(lat), codes, first)
	}
}

func TestDriveDuration(t *testing.T) {
	start := time.Now()
	lat, codes, _, elapsed := drive(context.Background(), 4, 50*time.Millisecond, 0, func(context.Context, int, int) error {
		time.Sleep(time.Millisecond)
		return nil
	})
	if len(lat) == 0 || len(codes) != 0 || elapsed < 50*time.Millisecond || time.Since(start) > 5*time.Second {
		t.Fatalf("ok %d, codes %v, elapsed %v", len(lat), codes, elapsed)
	}
}

func TestSplitJWT(t *testing.T) {
	sig := strings.Repeat("A", 86) // 64 bytes of base64url
	if in, s, err := splitJWT("aGVhZA.Ym9keQ." + sig); err != nil || in != "aGVhZA.Ym9keQ" || len(s) != 64 {
		t.Fatalf("splitJWT = %q, %d bytes, %v", in, len(s), err)
	}
	for _, bad := range []string{"", "a.b", "a.b.c.d", "a.b.AAAA"} {
		if _, _, err := splitJWT(bad); errorCode(err) != "check" {
			t.Errorf("splitJWT(%q) = %v", bad, err)
		}
	}
}
