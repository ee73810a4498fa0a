package client_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sigil-kms/sigil/client"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/hsm/pkcs11"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/server"
	"github.com/sigil-kms/sigil/softhsm"
)

func TestMain(m *testing.M) { softhsm.Main(m) }

// sigil is a Sigil server over a fresh SoftHSM token and Postgres database.
type sigil struct {
	url   string
	http  *http.Client
	c     *client.Client
	token *softhsm.Token
	hsm   *hsmtest.Faulty // counts the real backend's calls
}

func start(t *testing.T) *sigil {
	t.Helper()
	tok := softhsm.NewToken(t)
	b, err := pkcs11.Open(context.Background(), pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	counted := hsmtest.NewFaulty(b)
	srv := httptest.NewUnstartedServer(server.New(kms.New(counted, postgrestest.NewStore(t)), server.Options{Logger: slog.New(slog.DiscardHandler)}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &sigil{url: srv.URL, http: srv.Client(), c: client.New(srv.URL, srv.Client()), token: tok, hsm: counted}
}

func (s *sigil) createKey(t *testing.T, name string, alg sigilv1.Algorithm) {
	t.Helper()
	if _, err := s.c.CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Name: name, Algorithm: alg}); err != nil {
		t.Fatalf("CreateKey(%s): %v", name, err)
	}
}

func TestEncryptDecrypt(t *testing.T) {
	ctx := context.Background()
	s := start(t)
	s.createKey(t, "k", sigilv1.Algorithm_ALGORITHM_AES_256_GCM)
	ct, err := s.c.Encrypt(ctx, "k", []byte("data"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := s.c.Decrypt(ctx, "k", ct, []byte("ad"))
	if err != nil || string(pt) != "data" {
		t.Fatalf("Decrypt = %q, %v", pt, err)
	}
}
