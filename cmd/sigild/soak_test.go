package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/structpb"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/softhsm"
)

// soakEnv sets the soak's duration, such as 10m; the default keeps the
// test command short.
const soakEnv = "SIGIL_SOAK_DURATION"

// sample is one reading of sigild's resources.
type sample struct {
	goroutines, rss, idleSessions, busySessions, dbConns float64
}

func (s sample) String() string {
	return fmt.Sprintf("%.0f goroutines, RSS %.1f MB, HSM sessions %.0f idle and %.0f in use, %.0f database connections",
		s.goroutines, s.rss/1e6, s.idleSessions, s.busySessions, s.dbConns)
}

// TestSoak drives a mix of RPCs at concurrency 64 for SIGIL_SOAK_DURATION
// (20s unless set) and samples sigild's goroutines, RSS, open HSM sessions
// and database connections. It fails on any error, on a goroutine count
// that does not come back to its level before the load, on more sessions
// or connections than the pools allow, and on RSS growth of more than a
// quarter between the end of the first quarter of the run and its end.
func TestSoak(t *testing.T) {
	duration := 20 * time.Second
	if v := os.Getenv(soakEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", soakEnv, err)
		}
		duration = d
	}
	dbURL := postgrestest.NewDatabase(t)
	p := startSigild(t, softhsm.NewToken(t), dbURL, "--hsm-max-sessions", "8")
	ctx := context.Background()
	admin := p.client()
	for name, alg := range map[string]sigilv1.Algorithm{"aes": sigilv1.Algorithm_ALGORITHM_AES_256_GCM, "ec": sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256} {
		if _, err := admin.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: name, Algorithm: alg}); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	read := func() sample {
		t.Helper()
		fams := scrape(t, p.url)
		if sum(fams, "sigil_hsm_sessions_max", nil) != 8 {
			t.Fatalf("sigil_hsm_sessions_max = %v, want 8", sum(fams, "sigil_hsm_sessions_max", nil))
		}
		s := sample{
			goroutines:   sum(fams, "go_goroutines", nil),
			rss:          sum(fams, "process_resident_memory_bytes", nil),
			idleSessions: sum(fams, "sigil_hsm_sessions_idle", nil),
			busySessions: sum(fams, "sigil_hsm_sessions_in_use", nil),
		}
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		s.dbConns = float64(n)
		return s
	}
	before := read()

	var p2 http.Protocols
	p2.SetUnencryptedHTTP2(true)
	transport := &http.Transport{Protocols: &p2, MaxIdleConnsPerHost: 64}
	c := sigilv1connect.NewKeyManagementServiceClient(&http.Client{Transport: transport}, p.url)
	enc, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "aes", Plaintext: make([]byte, 1024)})
	if err != nil {
		t.Fatal(err)
	}
	claims, _ := structpb.NewStruct(map[string]any{"sub": "soak"})
	digest := make([]byte, 32)
	ops := []func(context.Context) error{
		func(ctx context.Context) error {
			_, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "aes", Plaintext: make([]byte, 1024)})
			return err
		},
		func(ctx context.Context) error {
			_, err := c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "aes", Ciphertext: enc.GetCiphertext()})
			return err
		},
		func(ctx context.Context) error {
			_, err := c.GenerateDataKey(ctx, &sigilv1.GenerateDataKeyRequest{Name: "aes"})
			return err
		},
		func(ctx context.Context) error {
			_, err := c.Sign(ctx, &sigilv1.SignRequest{Name: "ec", Input: &sigilv1.SignRequest_Digest{Digest: digest}})
			return err
		},
		func(ctx context.Context) error {
			_, err := c.SignJWT(ctx, &sigilv1.SignJWTRequest{Name: "ec", Claims: claims})
			return err
		},
		func(ctx context.Context) error {
			_, err := c.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "aes"})
			return err
		},
	}

	var (
		calls    atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
	)
	loadCtx, stop := context.WithTimeout(ctx, duration)
	defer stop()
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := ops[rand.IntN(len(ops))](callCtx)
				cancel()
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%v (%v)", err, connect.CodeOf(err)))
				}
			}
		})
	}
	var samples []sample
	tick := time.NewTicker(max(duration/20, 500*time.Millisecond))
	for loadCtx.Err() == nil {
		select {
		case <-tick.C:
			samples = append(samples, read())
		case <-loadCtx.Done():
		}
	}
	tick.Stop()
	wg.Wait()
	transport.CloseIdleConnections()
	samples = append(samples, read())
	t.Logf("%d calls in %v at concurrency 64, %d failed", calls.Load(), duration, failures.Load())
	t.Logf("before: %v", before)
	for i, s := range samples {
		t.Logf("sample %2d: %v", i, s)
	}
	if failures.Load() > 0 {
		t.Errorf("%d calls failed; the first: %v", failures.Load(), firstErr.Load())
	}
	for _, s := range samples {
		// The two are read one after the other, so a session handed
		// back between the reads may count in both.
		if s.idleSessions > 8 || s.busySessions > 8 {
			t.Errorf("%v: more HSM sessions than --hsm-max-sessions 8", s)
		}
		// The key store's pool, its change watcher and the audit log's
		// pool: pgxpool's default of max(4, cores) each, plus the watcher.
		if s.dbConns > 2*4+1+2*8 {
			t.Errorf("%v: more database connections than the pools allow", s)
		}
	}
	// Once the load has stopped and the client's connections are closed,
	// the goroutines serving them must be gone. The server closes them
	// asynchronously, so allow it a moment, polling.
	var after sample
	for deadline := time.Now().Add(10 * time.Second); ; {
		after = read()
		if after.goroutines <= before.goroutines+5 || time.Now().After(deadline) {
			break
		}
		p.waitOutput(time.Now().Add(100 * time.Millisecond))
	}
	if after.goroutines > before.goroutines+5 {
		t.Errorf("goroutines: %.0f before the load, %.0f after it: a leak", before.goroutines, after.goroutines)
	}
	switch {
	case raceDetector:
		t.Log("RSS not checked: the race detector's shadow memory grows with every goroutine; run without -race")
	case len(samples) >= 8:
		early, end := samples[len(samples)/4], samples[len(samples)-1]
		if end.rss > early.rss*1.25 {
			t.Errorf("RSS grew from %.1f MB to %.1f MB during the soak", early.rss/1e6, end.rss/1e6)
		}
	}
}

// TestConcurrencyLimit runs 256 concurrent Encrypts twice: under the
// default in-flight limit all succeed; under --max-inflight 16 the excess
// is refused with ResourceExhausted and nothing fails any other way.
func TestConcurrencyLimit(t *testing.T) {
	tok := softhsm.NewToken(t)
	for _, limit := range []string{"", "16"} {
		t.Run("max-inflight="+limit, func(t *testing.T) {
			var extra []string
			if limit != "" {
				extra = []string{"--max-inflight", limit}
			}
			p := startSigild(t, tok, postgrestest.NewDatabase(t), extra...)
			ctx := context.Background()
			if _, err := p.client().CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
				t.Fatal(err)
			}
			var p2 http.Protocols
			p2.SetUnencryptedHTTP2(true)
			c := sigilv1connect.NewKeyManagementServiceClient(&http.Client{Transport: &http.Transport{Protocols: &p2}}, p.url)
			const ok = connect.Code(0) // no error; CodeOf(nil) is Unknown
			codes := make(chan connect.Code, 256)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for range 256 {
				wg.Go(func() {
					<-start
					_, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: make([]byte, 1024)})
					if err == nil {
						codes <- ok
						return
					}
					codes <- connect.CodeOf(err)
				})
			}
			close(start)
			wg.Wait()
			close(codes)
			count := map[connect.Code]int{}
			for code := range codes {
				count[code]++
			}
			t.Logf("256 concurrent Encrypts: %d succeeded, %d resource_exhausted, %d other", count[ok], count[connect.CodeResourceExhausted], 256-count[ok]-count[connect.CodeResourceExhausted])
			// 256 calls started together, each waiting at least for an
			// audit commit, overlap far beyond 16.
			if limit != "" && count[connect.CodeResourceExhausted] == 0 {
				t.Errorf("no Encrypt of 256 concurrent ones was refused under --max-inflight %s", limit)
			}
			for code, n := range count {
				if code != ok && (limit == "" || code != connect.CodeResourceExhausted) {
					t.Errorf("%d Encrypts failed with %v", n, code)
				}
			}
		})
	}
}
