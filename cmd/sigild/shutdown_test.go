package main

import (
	"context"
	"net/http"
	"sync"
	"syscall"
	"testing"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/server"
	"github.com/sigil-kms/sigil/softhsm"
)

// TestShutdownUnderLoad sends SIGTERM to sigild while 16 clients encrypt
// as fast as they can, and checks that it exits cleanly and that every
// request that got a success response has its audit record in the
// database.
func TestShutdownUnderLoad(t *testing.T) {
	dbURL := postgrestest.NewDatabase(t)
	p := startSigild(t, softhsm.NewToken(t), dbURL)
	ctx := context.Background()
	if _, err := p.client().CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
		t.Fatal(err)
	}
	encrypt := connect.NewClient[sigilv1.EncryptRequest, sigilv1.EncryptResponse](http.DefaultClient,
		p.url+sigilv1connect.KeyManagementServiceEncryptProcedure)

	var (
		mu        sync.Mutex
		succeeded []string // request ids of the successful responses
		started   = make(chan struct{})
		once      sync.Once
	)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				res, err := encrypt.CallUnary(ctx, connect.NewRequest(&sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("x")}))
				if err != nil {
					return // the server is going away
				}
				mu.Lock()
				succeeded = append(succeeded, res.Header().Get(server.RequestIDHeader))
				if len(succeeded) == 200 {
					once.Do(func() { close(started) })
				}
				mu.Unlock()
			}
		})
	}
	<-started
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := p.wait(); err != nil {
		t.Fatalf("sigild exited with %v after SIGTERM:\n%s", err, p.output())
	}

	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ids []string
	if err := conn.QueryRow(ctx, `SELECT array_agg(request_id) FROM audit_log WHERE rpc = 'Encrypt' AND outcome = 'ok'`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	audited := make(map[string]bool, len(ids))
	for _, id := range ids {
		audited[id] = true
	}
	missing := 0
	for _, id := range succeeded {
		if id == "" || !audited[id] {
			missing++
		}
	}
	t.Logf("%d successful Encrypts before and during shutdown, %d audited", len(succeeded), len(ids))
	if missing > 0 {
		t.Fatalf("%d of %d successful Encrypts have no audit record", missing, len(succeeded))
	}
}
