package server

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sigil-kms/sigil/audit"
	auditpg "github.com/sigil-kms/sigil/audit/postgres"
	"github.com/sigil-kms/sigil/authn"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/hsm/pkcs11"
	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
	"github.com/sigil-kms/sigil/keystore/postgres"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/policy"
	"github.com/sigil-kms/sigil/softhsm"
)

// testPolicy grants: admin everything on every key; an encrypt-only
// identity on "pay-*"; a signer with a claim policy on "login".
const testPolicy = `
rules:
  - identities: ["token:admin"]
    keys: ["*"]
    allow: ["admin", "*"]
    jwt: {}
  - identities: ["token:encrypter"]
    keys: ["pay-*"]
    allow: ["encrypt"]
  - identities: ["token:signer"]
    keys: ["login"]
    allow: ["SignJWT"]
    jwt:
      audiences: ["api"]
      max_lifetime: 15m
  - identities: ["token:mover"]
    keys: ["pay-*"]
    allow: ["ReEncrypt"]
  - identities: ["token:reader"]
    keys: ["pay-*"]
    allow: ["read"]
  - identities: ["token:nobody-*"]
    keys: ["none"]
    allow: ["GetKey"]
`

// tokens maps identity names to their secret bearer tokens, made up here.
var tokens = map[string]string{"admin": "t-admin", "encrypter": "t-enc", "signer": "t-sign", "stranger": "t-stranger", "mover": "t-mover", "reader": "t-reader"}

// auditView is what the tests read back of an audit log.
type auditView interface {
	Records() []audit.Record
}

type accessFixture struct {
	url   string
	audit auditView
	kms   map[string]sigilv1connect.KeyManagementServiceClient // by identity
	anon  sigilv1connect.KeyManagementServiceClient
}

// bearer is an http.RoundTripper that adds a bearer token.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func startAccess(t *testing.T) accessFixture {
	t.Helper()
	log := audit.NewMemory(time.Now)
	return startAccessWith(t, hsmtest.NewMemory(), keystoretest.NewMemory(), log, log)
}

// startAccessWith serves Sigil with token authentication and testPolicy
// over the given backend, store and audit log.
func startAccessWith(t *testing.T, b hsm.Backend, store keystore.Store, log audit.Log, view auditView) accessFixture {
	t.Helper()
	hashes := map[string]string{}
	for name, tok := range tokens {
		sum := sha256.Sum256([]byte(tok))
		hashes[name] = hex.EncodeToString(sum[:])
	}
	a, err := authn.New(context.Background(), authn.Config{Tokens: hashes})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	h := New(kms.New(b, store), Options{
		Logger: slog.New(slog.DiscardHandler), Authenticator: a, Policy: func() *policy.Policy { return p },
		Audit: log, AuditSalt: []byte("0123456789abcdef"),
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f := accessFixture{url: srv.URL, audit: view, kms: map[string]sigilv1connect.KeyManagementServiceClient{}}
	for name, tok := range tokens {
		f.kms[name] = sigilv1connect.NewKeyManagementServiceClient(&http.Client{Transport: bearer{tok}}, srv.URL)
	}
	f.anon = sigilv1connect.NewKeyManagementServiceClient(http.DefaultClient, srv.URL)
	return f
}

// oneRecord checks that exactly one audit record was added since before,
// and returns it.
func (f accessFixture) oneRecord(t *testing.T, before int) audit.Record {
	t.Helper()
	recs := f.audit.Records()
	if len(recs) != before+1 {
		t.Fatalf("%d audit records added, want exactly 1", len(recs)-before)
	}
	return recs[len(recs)-1]
}

func TestAccessMatrix(t *testing.T) {
	t.Run("fakes", func(t *testing.T) { accessMatrix(t, startAccess(t)) })
	t.Run("SoftHSM and Postgres", func(t *testing.T) {
		f, _, _ := startAccessReal(t)
		accessMatrix(t, f)
	})
}

func accessMatrix(t *testing.T, f accessFixture) {
	ctx := context.Background()
	admin := f.kms["admin"]
	for _, name := range []string{"pay-a", "pay-b", "other"} {
		if _, err := admin.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: name, Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "login", Algorithm: sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256}); err != nil {
		t.Fatal(err)
	}
	enc, err := admin.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "pay-a", Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	badToken := sigilv1connect.NewKeyManagementServiceClient(&http.Client{Transport: bearer{"t-wrong"}}, f.url)
	claims := func(m map[string]any) *structpb.Struct { s, _ := structpb.NewStruct(m); return s }
	exp := time.Now().Add(10 * time.Minute).Unix()
	tests := []struct {
		name     string
		identity string
		call     func() error
		code     connect.Code
	}{
		{"no credentials", "", func() error {
			_, err := f.anon.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "pay-a"})
			return err
		}, connect.CodeUnauthenticated},
		{"unknown token", "", func() error {
			_, err := badToken.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "pay-a"})
			return err
		}, connect.CodeUnauthenticated},
		{"authenticated, no rule", "token:stranger", func() error {
			_, err := f.kms["stranger"].Encrypt(ctx, &sigilv1.EncryptRequest{Name: "pay-a"})
			return err
		}, connect.CodePermissionDenied},
		{"allowed on pay-*, used on other", "token:encrypter", func() error {
			_, err := f.kms["encrypter"].Encrypt(ctx, &sigilv1.EncryptRequest{Name: "other"})
			return err
		}, connect.CodePermissionDenied},
		{"key that does not exist looks the same", "token:encrypter", func() error {
			_, err := f.kms["encrypter"].Encrypt(ctx, &sigilv1.EncryptRequest{Name: "nope"})
			return err
		}, connect.CodePermissionDenied},
		{"encrypt-only calls Decrypt", "token:encrypter", func() error {
			_, err := f.kms["encrypter"].Decrypt(ctx, &sigilv1.DecryptRequest{Name: "pay-a", Ciphertext: enc.GetCiphertext()})
			return err
		}, connect.CodePermissionDenied},
		{"encrypt-only calls RotateKey", "token:encrypter", func() error {
			_, err := f.kms["encrypter"].RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "pay-a"})
			return err
		}, connect.CodePermissionDenied},
		{"encrypt-only calls Encrypt", "token:encrypter", func() error {
			_, err := f.kms["encrypter"].Encrypt(ctx, &sigilv1.EncryptRequest{Name: "pay-b", Plaintext: []byte("ok")})
			return err
		}, 0},
		{"claims within the policy", "token:signer", func() error {
			_, err := f.kms["signer"].SignJWT(ctx, &sigilv1.SignJWTRequest{Name: "login", Claims: claims(map[string]any{"sub": "a", "aud": "api", "exp": exp})})
			return err
		}, 0},
		{"audience outside the claim policy", "token:signer", func() error {
			_, err := f.kms["signer"].SignJWT(ctx, &sigilv1.SignJWTRequest{Name: "login", Claims: claims(map[string]any{"sub": "a", "aud": "admin", "exp": exp})})
			return err
		}, connect.CodePermissionDenied},
		{"lifetime over the claim policy", "token:signer", func() error {
			_, err := f.kms["signer"].SignJWT(ctx, &sigilv1.SignJWTRequest{Name: "login", Claims: claims(map[string]any{"sub": "a", "aud": "api", "exp": time.Now().Add(24 * time.Hour).Unix()})})
			return err
		}, connect.CodePermissionDenied},
		{"no exp", "token:signer", func() error {
			_, err := f.kms["signer"].SignJWT(ctx, &sigilv1.SignJWTRequest{Name: "login", Claims: claims(map[string]any{"sub": "a", "aud": "api"})})
			return err
		}, connect.CodePermissionDenied},
		{"ReEncrypt to a key outside the rule", "token:mover", func() error {
			_, err := f.kms["mover"].ReEncrypt(ctx, &sigilv1.ReEncryptRequest{Name: "pay-a", Ciphertext: enc.GetCiphertext(), DestinationName: "other"})
			return err
		}, connect.CodePermissionDenied},
		{"ReEncrypt within the rule", "token:mover", func() error {
			_, err := f.kms["mover"].ReEncrypt(ctx, &sigilv1.ReEncryptRequest{Name: "pay-a", Ciphertext: enc.GetCiphertext(), DestinationName: "pay-b"})
			return err
		}, 0},
		{"signer calls Sign", "token:signer", func() error {
			_, err := f.kms["signer"].Sign(ctx, &sigilv1.SignRequest{Name: "login", Input: &sigilv1.SignRequest_Message{Message: []byte("x")}})
			return err
		}, connect.CodePermissionDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.audit.Records())
			err := tc.call()
			if connect.CodeOf(err) != tc.code && !(tc.code == 0 && err == nil) {
				t.Fatalf("err = %v, want code %v", err, tc.code)
			}
			rec := f.oneRecord(t, before)
			wantOutcome := audit.OutcomeOK
			if tc.code != 0 {
				wantOutcome = tc.code.String()
			}
			if rec.Outcome != wantOutcome || rec.Identity != tc.identity || rec.RequestID == "" || rec.RPC == "" {
				t.Fatalf("record = %+v, want outcome %s identity %q", rec, wantOutcome, tc.identity)
			}
		})
	}
	// ListKeys shows only the keys the identity may read, and its page
	// tokens name no other key.
	res, err := f.kms["stranger"].ListKeys(ctx, &sigilv1.ListKeysRequest{})
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("ListKeys without read rights: %v, %v", res, err)
	}
	var seen []string
	req := &sigilv1.ListKeysRequest{PageSize: 1}
	for i := 0; i < 10; i++ {
		page, err := f.kms["reader"].ListKeys(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range page.GetKeys() {
			seen = append(seen, k.GetName())
		}
		if tok := page.GetNextPageToken(); tok != "" {
			name, _ := base64.RawURLEncoding.DecodeString(tok)
			if !strings.HasPrefix(string(name), "pay-") {
				t.Fatalf("a page token names %q", name)
			}
		} else {
			break
		}
		req.PageToken = page.GetNextPageToken()
	}
	if strings.Join(seen, ",") != "pay-a,pay-b" {
		t.Fatalf("reader listed %v, want pay-a and pay-b", seen)
	}
}

// TestEveryRPCAudited calls every RPC once as an identity allowed all of
// them and checks one audit record each, carrying none of the secrets the
// test sent.
func TestEveryRPCAudited(t *testing.T) {
	t.Run("fakes", func(t *testing.T) { everyRPCAudited(t, startAccess(t)) })
	t.Run("SoftHSM and Postgres", func(t *testing.T) {
		f, dbURL, rec := startAccessReal(t)
		everyRPCAudited(t, f)
		checked, bad, err := auditpg.VerifyDatabase(context.Background(), dbURL)
		if err != nil || bad != 0 || checked != int64(len(rec.Records())) {
			t.Fatalf("database chain: %d checked (want %d), first bad %d, %v", checked, len(rec.Records()), bad, err)
		}
	})
}

// startAccessReal is startAccess over SoftHSM, Postgres and the Postgres
// audit log; it also returns the database URL and the recorded copy.
func startAccessReal(t *testing.T) (accessFixture, string, *recordingLog) {
	t.Helper()
	{
		tok := softhsm.NewToken(t)
		dbURL := postgrestest.NewDatabase(t)
		ctx := context.Background()
		store, err := postgres.Open(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(store.Close)
		b, err := pkcs11.Open(ctx, pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		pg, err := auditpg.Open(ctx, dbURL, auditpg.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pg.Close() })
		rec := &recordingLog{Log: pg}
		return startAccessWith(t, b, store, rec, rec), dbURL, rec
	}
}

// recordingLog keeps a copy of every record its Postgres log committed.
type recordingLog struct {
	audit.Log
	mu   sync.Mutex
	recs []audit.Record
}

func (r *recordingLog) Append(ctx context.Context, rec audit.Record) error {
	sealed, err := r.Log.(audit.RecordAppender).AppendRecord(ctx, rec)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, sealed)
	return nil
}

func (r *recordingLog) Records() []audit.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Record(nil), r.recs...)
}

func everyRPCAudited(t *testing.T, f accessFixture) {
	ctx := context.Background()
	c := f.kms["admin"]
	const plaintext, aad = "PLAINTEXT-4f1d", "AAD-9c2e"
	calls := map[string]func() error{}
	var ct, sig []byte
	add := func(rpc string, fn func() error) { calls[rpc] = fn }
	seq := []string{}
	step := func(rpc string, fn func() error) { seq = append(seq, rpc); add(rpc, fn) }
	step("CreateKey", func() error {
		if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "sk", Algorithm: sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256}); err != nil {
			return err
		}
		_, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "ek", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM})
		return err
	})
	step("GetKey", func() error { _, err := c.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "ek"}); return err })
	step("ListKeys", func() error { _, err := c.ListKeys(ctx, &sigilv1.ListKeysRequest{}); return err })
	step("UpdateKey", func() error { _, err := c.UpdateKey(ctx, &sigilv1.UpdateKeyRequest{Name: "ek"}); return err })
	step("RotateKey", func() error { _, err := c.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "ek"}); return err })
	step("ListKeyVersions", func() error {
		_, err := c.ListKeyVersions(ctx, &sigilv1.ListKeyVersionsRequest{Name: "ek"})
		return err
	})
	step("DisableKeyVersion", func() error {
		_, err := c.DisableKeyVersion(ctx, &sigilv1.DisableKeyVersionRequest{Name: "ek", Version: 1})
		return err
	})
	step("EnableKeyVersion", func() error {
		_, err := c.EnableKeyVersion(ctx, &sigilv1.EnableKeyVersionRequest{Name: "ek", Version: 1})
		return err
	})
	step("ScheduleKeyVersionDestruction", func() error {
		_, err := c.ScheduleKeyVersionDestruction(ctx, &sigilv1.ScheduleKeyVersionDestructionRequest{Name: "ek", Version: 1})
		return err
	})
	step("RestoreKeyVersion", func() error {
		_, err := c.RestoreKeyVersion(ctx, &sigilv1.RestoreKeyVersionRequest{Name: "ek", Version: 1})
		return err
	})
	step("Encrypt", func() error {
		res, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "ek", Plaintext: []byte(plaintext), AssociatedData: []byte(aad)})
		ct = res.GetCiphertext()
		return err
	})
	step("Decrypt", func() error {
		_, err := c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "ek", Ciphertext: ct, AssociatedData: []byte(aad)})
		return err
	})
	step("ReEncrypt", func() error {
		_, err := c.ReEncrypt(ctx, &sigilv1.ReEncryptRequest{Name: "ek", Ciphertext: ct, AssociatedData: []byte(aad)})
		return err
	})
	step("GenerateDataKey", func() error {
		_, err := c.GenerateDataKey(ctx, &sigilv1.GenerateDataKeyRequest{Name: "ek", AssociatedData: []byte(aad)})
		return err
	})
	step("Sign", func() error {
		res, err := c.Sign(ctx, &sigilv1.SignRequest{Name: "sk", Input: &sigilv1.SignRequest_Message{Message: []byte(plaintext)}})
		sig = res.GetSignature()
		return err
	})
	step("Verify", func() error {
		_, err := c.Verify(ctx, &sigilv1.VerifyRequest{Name: "sk", Input: &sigilv1.VerifyRequest_Message{Message: []byte(plaintext)}, Signature: sig})
		return err
	})
	step("GetPublicKey", func() error { _, err := c.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Name: "sk"}); return err })
	step("SignJWT", func() error {
		st, _ := structpb.NewStruct(map[string]any{"sub": plaintext, "exp": time.Now().Add(time.Minute).Unix()})
		_, err := c.SignJWT(ctx, &sigilv1.SignJWTRequest{Name: "sk", Claims: st})
		return err
	})
	if len(calls) != len(policy.RPCs()) {
		t.Fatalf("the test calls %d RPCs, the service has %d", len(calls), len(policy.RPCs()))
	}
	for _, rpc := range seq {
		before := len(f.audit.Records())
		if err := calls[rpc](); err != nil {
			t.Fatalf("%s: %v", rpc, err)
		}
		// One record per request; a change to keys (an admin RPC) is
		// preceded by its intent record. The CreateKey step makes two keys.
		perCall := []string{audit.OutcomeOK}
		if policy.IsAdmin(rpc) {
			perCall = []string{audit.OutcomeIntent, audit.OutcomeOK}
		}
		var want []string
		for i := 0; i < map[bool]int{true: 2, false: 1}[rpc == "CreateKey"]; i++ {
			want = append(want, perCall...)
		}
		recs := f.audit.Records()[before:]
		if len(recs) != len(want) {
			t.Fatalf("%s added %d audit records, want %d", rpc, len(recs), len(want))
		}
		for i, r := range recs {
			if r.RPC != rpc || r.Outcome != want[i] || r.Identity != "token:admin" || r.RequestID == "" {
				t.Fatalf("%s: record %d %+v, want outcome %s", rpc, i, r, want[i])
			}
		}
	}
	all, _ := json.Marshal(f.audit.Records())
	for _, secret := range []string{plaintext, aad, hex.EncodeToString([]byte(plaintext)), "t-admin",
		base64.StdEncoding.EncodeToString(ct), hex.EncodeToString(ct), fmt.Sprintf("%x", sig)} {
		if strings.Contains(string(all), secret) {
			t.Fatalf("an audit record contains %q", secret)
		}
	}
	if _, bad, err := audit.Verify(ctx, audit.Each(f.audit.Records())); err != nil || bad != 0 {
		t.Fatalf("audit chain: first bad %d, %v", bad, err)
	}
}

// TestAuditFailureFailsClosed makes the audit log fail: every RPC then
// returns Unavailable and no payload.
func TestAuditFailureFailsClosed(t *testing.T) {
	ctx := context.Background()
	f := startAccess(t)
	c := f.kms["admin"]
	if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "ek", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "sk", Algorithm: sigilv1.Algorithm_ALGORITHM_ED25519}); err != nil {
		t.Fatal(err)
	}
	enc, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "ek", Plaintext: []byte("secret")})
	if err != nil {
		t.Fatal(err)
	}
	mem := f.audit.(*audit.Memory)
	mem.Fail(fmt.Errorf("%w: disk full", audit.ErrUnavailable))
	r1, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "ek", Plaintext: []byte("secret")})
	wantCode(t, err, connect.CodeUnavailable)
	r2, err := c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "ek", Ciphertext: enc.GetCiphertext()})
	wantCode(t, err, connect.CodeUnavailable)
	r3, err := c.Sign(ctx, &sigilv1.SignRequest{Name: "sk", Input: &sigilv1.SignRequest_Message{Message: []byte("m")}})
	wantCode(t, err, connect.CodeUnavailable)
	if r1 != nil || r2 != nil || r3 != nil {
		t.Fatal("a payload came back while the audit log was down")
	}
	_, err = f.anon.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "ek"})
	wantCode(t, err, connect.CodeUnavailable) // even a refusal needs its record
	// A change to keys is not made when its intent cannot be recorded.
	_, err = c.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "ek"})
	wantCode(t, err, connect.CodeUnavailable)
	_, err = c.ScheduleKeyVersionDestruction(ctx, &sigilv1.ScheduleKeyVersionDestructionRequest{Name: "ek", Version: 1})
	wantCode(t, err, connect.CodeUnavailable)
	mem.Recover()
	vs, err := c.ListKeyVersions(ctx, &sigilv1.ListKeyVersionsRequest{Name: "ek"})
	if err != nil || len(vs.GetKeyVersions()) != 1 || vs.GetKeyVersions()[0].GetState() != sigilv1.VersionState_VERSION_STATE_ENABLED {
		t.Fatalf("changes made while the audit log was down: %v, %v", vs, err)
	}
	if _, err := c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "ek", Ciphertext: enc.GetCiphertext()}); err != nil {
		t.Fatalf("after the audit log recovered: %v", err)
	}
}

// TestRefusedBeforeHandlerAudited sends requests that connect-go refuses
// before any handler runs; each still leaves one audit record.
func TestRefusedBeforeHandlerAudited(t *testing.T) {
	f := startAccess(t)
	post := func(body string, contentType string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, f.url+"/sigil.v1.KeyManagementService/Encrypt", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Authorization", "Bearer t-admin")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, tc := range []struct {
		name, body, contentType, outcome string
	}{
		{"malformed JSON", `{"name":`, "application/json", "invalid_argument"},
		{"body over 1 MiB", `{"name":"k","plaintext":"` + strings.Repeat("A", 3<<20) + `"}`, "application/json", "resource_exhausted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.audit.Records())
			if code := post(tc.body, tc.contentType); code == http.StatusOK {
				t.Fatalf("status %d", code)
			}
			rec := f.oneRecord(t, before)
			if rec.Outcome != tc.outcome || rec.Identity != "token:admin" || rec.RPC != "Encrypt" {
				t.Fatalf("record %+v, want outcome %s", rec, tc.outcome)
			}
		})
	}
}
