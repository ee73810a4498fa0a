package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
	"github.com/sigil-kms/sigil/kms"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testServer is a Sigil HTTP/2 server over the given backend and store.
type testServer struct {
	url    string
	http   *http.Client
	client sigilv1connect.KeyManagementServiceClient
	grpc   sigilv1connect.KeyManagementServiceClient
	log    *syncBuffer
}

func startServer(t *testing.T, b hsm.Backend, s keystore.Store) *testServer {
	t.Helper()
	return startService(t, kms.New(b, s))
}

func startService(t *testing.T, svc *kms.Service) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	h := New(svc, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &testServer{
		url:    srv.URL,
		http:   srv.Client(),
		client: sigilv1connect.NewKeyManagementServiceClient(srv.Client(), srv.URL),
		grpc:   sigilv1connect.NewKeyManagementServiceClient(srv.Client(), srv.URL, connect.WithGRPC()),
		log:    logs,
	}
}

type fakes struct {
	hsm   *hsmtest.Faulty
	store *keystoretest.Memory
	*testServer
}

func startFakes(t *testing.T) fakes {
	t.Helper()
	b := hsmtest.NewFaulty(hsmtest.NewMemory())
	s := keystoretest.NewMemory()
	return fakes{hsm: b, store: s, testServer: startServer(t, b, s)}
}

func wantCode(t *testing.T, err error, code connect.Code) *connect.Error {
	t.Helper()
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("err = %v, want code %v", err, code)
	}
	if cerr.Code() != code {
		t.Fatalf("code = %v (%q), want %v", cerr.Code(), cerr.Message(), code)
	}
	return cerr
}

func createAES(t *testing.T, c sigilv1connect.KeyManagementServiceClient, name string) *sigilv1.Key {
	t.Helper()
	res, err := c.CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Name: name, Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM})
	if err != nil {
		t.Fatalf("CreateKey(%s): %v", name, err)
	}
	return res.GetKey()
}

func TestConnectAndGRPC(t *testing.T) {
	ctx := context.Background()
	f := startFakes(t)
	k := createAES(t, f.client, "k")
	if k.GetPrimaryVersion() != 1 || k.GetPurpose() != sigilv1.Purpose_PURPOSE_ENCRYPT_DECRYPT || k.GetId() == "" {
		t.Fatalf("key = %v", k)
	}
	enc, err := f.grpc.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("over grpc"), AssociatedData: []byte("ad")})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := f.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: enc.GetCiphertext(), AssociatedData: []byte("ad")})
	if err != nil || string(dec.GetPlaintext()) != "over grpc" || dec.GetKeyVersion() != 1 {
		t.Fatalf("Decrypt = %v, %v", dec, err)
	}
	_, err = f.grpc.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "missing"})
	wantCode(t, err, connect.CodeNotFound)
}

// TestCurlJSON drives the API the way the README's curl example does: Connect
// JSON over HTTP/1.1 with base64 bytes.
func TestCurlJSON(t *testing.T) {
	f := startFakes(t)
	createAES(t, f.client, "k")
	post := func(rpc, body string) (int, map[string]any) {
		t.Helper()
		res, err := f.http.Post(f.url+"/sigil.v1.KeyManagementService/"+rpc, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, out
	}
	pt := base64.StdEncoding.EncodeToString([]byte("hello"))
	code, out := post("Encrypt", `{"name":"k","plaintext":"`+pt+`"}`)
	if code != 200 || out["keyVersion"] != float64(1) {
		t.Fatalf("Encrypt: %d %v", code, out)
	}
	code, out = post("Decrypt", `{"name":"k","ciphertext":"`+out["ciphertext"].(string)+`"}`)
	if code != 200 || out["plaintext"] != pt {
		t.Fatalf("Decrypt: %d %v", code, out)
	}
	code, out = post("Encrypt", `{"name":"no/such","plaintext":""}`)
	if code != 400 || out["code"] != "invalid_argument" {
		t.Fatalf("bad name: %d %v", code, out)
	}
	code, out = post("Encrypt", `{"name":`)
	if code != 400 || out["code"] != "invalid_argument" {
		t.Fatalf("malformed JSON: %d %v", code, out)
	}
}

// TestResponsesNotCompressed asks for gzip and gets a plain response, even
// for a plaintext that would shrink to nothing.
func TestResponsesNotCompressed(t *testing.T) {
	f := startFakes(t)
	createAES(t, f.client, "k")
	enc, err := f.client.Encrypt(context.Background(), &sigilv1.EncryptRequest{Name: "k", Plaintext: make([]byte, 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	body, err := proto.Marshal(&sigilv1.DecryptRequest{Name: "k", Ciphertext: enc.GetCiphertext()})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, f.url+"/sigil.v1.KeyManagementService/Decrypt", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Accept-Encoding", "gzip") // set by hand: the transport then leaves the response as sent
	res, err := f.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	n, _ := io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Encoding") != "" || n < 64<<10 {
		t.Fatalf("Decrypt: status %d, Content-Encoding %q, %d bytes; want 200, no encoding, the whole plaintext",
			res.StatusCode, res.Header.Get("Content-Encoding"), n)
	}
}

func TestErrorCodes(t *testing.T) {
	ctx := context.Background()
	f := startFakes(t)
	createAES(t, f.client, "k")
	// A signing key, written straight into the store: no API creates one yet.
	sk, v, err := f.store.CreateKey(ctx, keystore.Key{ID: [16]byte{1}, Name: "signer", Purpose: keystore.PurposeSignVerify, Algorithm: "EC_P256_SHA256"}, make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store.CommitVersion(ctx, sk.ID, v.Version, nil, true); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
		code connect.Code
	}{
		{"unknown key", func() error {
			_, err := f.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "nope"})
			return err
		}, connect.CodeNotFound},
		{"bad name", func() error {
			_, err := f.client.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "../etc/passwd"})
			return err
		}, connect.CodeInvalidArgument},
		{"duplicate", func() error {
			_, err := f.client.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM})
			return err
		}, connect.CodeAlreadyExists},
		{"unspecified algorithm", func() error {
			_, err := f.client.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "x"})
			return err
		}, connect.CodeInvalidArgument},
		{"unknown algorithm value", func() error {
			_, err := f.client.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "x", Algorithm: 99})
			return err
		}, connect.CodeInvalidArgument},
		{"encrypt with signing key", func() error {
			_, err := f.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "signer", Plaintext: []byte("x")})
			return err
		}, connect.CodeFailedPrecondition},
		{"decrypt with signing key", func() error {
			_, err := f.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "signer", Ciphertext: []byte("x")})
			return err
		}, connect.CodeFailedPrecondition},
		{"plaintext over 64 KiB", func() error {
			_, err := f.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: make([]byte, kms.MaxPlaintext+1)})
			return err
		}, connect.CodeResourceExhausted},
		{"associated data over 64 KiB", func() error {
			_, err := f.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", AssociatedData: make([]byte, kms.MaxAssociatedData+1)})
			return err
		}, connect.CodeResourceExhausted},
		{"body over 1 MiB", func() error {
			// Labels, not plaintext, so that only the body limit can trip.
			labels := map[string]string{}
			for i := 0; i < 5000; i++ {
				labels[fmt.Sprintf("l%d", i)] = strings.Repeat("v", 250)
			}
			_, err := f.client.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "big", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM, Labels: labels})
			return err
		}, connect.CodeResourceExhausted},
		{"negative page size", func() error {
			_, err := f.client.ListKeys(ctx, &sigilv1.ListKeysRequest{PageSize: -1})
			return err
		}, connect.CodeInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := f.hsm.Calls("Seal") + f.hsm.Calls("Open") + f.hsm.Calls("GenerateKey")
			wantCode(t, tc.call(), tc.code)
			if n := f.hsm.Calls("Seal") + f.hsm.Calls("Open") + f.hsm.Calls("GenerateKey") - before; n != 0 {
				t.Fatalf("refused request made %d HSM calls", n)
			}
		})
	}
}

// TestInternalErrorsDoNotLeak injects HSM and database failures carrying
// internal text and checks that the caller sees only the code and a generic
// message, while the log has the cause under the same request id.
func TestInternalErrorsDoNotLeak(t *testing.T) {
	ctx := context.Background()
	f := startFakes(t)
	createAES(t, f.client, "k")
	enc, err := f.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	const secret = "CKR_DEVICE_ERROR slot 7 pin-hint-xyzzy"
	f.hsm.Fail(fmt.Errorf("%w: %s", hsm.ErrUnavailable, secret))
	_, err = f.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: enc.GetCiphertext()})
	cerr := wantCode(t, err, connect.CodeUnavailable)
	checkNoLeak(t, f, cerr, secret)

	f.hsm.Fail(fmt.Errorf("hsm: C_Encrypt: %s", secret)) // not an availability error
	_, err = f.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte("x")})
	cerr = wantCode(t, err, connect.CodeInternal)
	checkNoLeak(t, f, cerr, secret)
	f.hsm.Recover()

	const sqlText = "ERROR: relation keys does not exist (SQLSTATE 42P01)"
	f.store.Fail(fmt.Errorf("%w: %s", keystore.ErrUnavailable, sqlText))
	_, err = f.client.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "k"})
	cerr = wantCode(t, err, connect.CodeUnavailable)
	checkNoLeak(t, f, cerr, sqlText)
	f.store.Recover()
}

func checkNoLeak(t *testing.T, f fakes, cerr *connect.Error, secret string) {
	t.Helper()
	if strings.Contains(cerr.Message(), "CKR") || strings.Contains(cerr.Message(), "SQL") || strings.Contains(cerr.Error(), secret) {
		t.Fatalf("wire message leaks internals: %q", cerr.Message())
	}
	id := cerr.Meta().Get(RequestIDHeader)
	if id == "" {
		t.Fatal("error has no request id")
	}
	for _, line := range strings.Split(f.log.String(), "\n") {
		if strings.Contains(line, id) && strings.Contains(line, secret) {
			return
		}
	}
	t.Fatalf("no log line has request id %s and the cause", id)
}

func TestDecryptErrorsIdentical(t *testing.T) {
	ctx := context.Background()
	f := startFakes(t)
	createAES(t, f.client, "a")
	createAES(t, f.client, "b")
	enc, _ := f.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "a", Plaintext: []byte("p"), AssociatedData: []byte("ad")})
	ct := enc.GetCiphertext()
	var msgs []string
	for _, tc := range []struct {
		key string
		ct  []byte
		ad  string
	}{
		{"a", nil, "ad"},
		{"a", ct[:10], "ad"},
		{"a", ct, "wrong"},
		{"a", append(bytes.Clone(ct), 1), "ad"},
		{"b", ct, "ad"},
	} {
		_, err := f.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: tc.key, Ciphertext: tc.ct, AssociatedData: []byte(tc.ad)})
		msgs = append(msgs, wantCode(t, err, connect.CodeInvalidArgument).Message())
	}
	for _, m := range msgs {
		if m != msgs[0] {
			t.Fatalf("decryption failures differ: %q", msgs)
		}
	}
}

func TestHealth(t *testing.T) {
	f := startFakes(t)
	get := func(path string) int {
		t.Helper()
		res, err := f.http.Get(f.url + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	if c := get("/healthz"); c != 200 {
		t.Fatalf("/healthz = %d", c)
	}
	if c := get("/readyz"); c != 200 {
		t.Fatalf("/readyz = %d", c)
	}
	f.hsm.Fail(fmt.Errorf("%w: CKR_TOKEN_NOT_PRESENT", hsm.ErrUnavailable))
	if c := get("/readyz"); c != 503 {
		t.Fatalf("/readyz with HSM down = %d", c)
	}
	if c := get("/healthz"); c != 200 {
		t.Fatalf("/healthz with HSM down = %d", c)
	}
	f.hsm.Recover()
	f.store.Fail(fmt.Errorf("%w: connection refused", keystore.ErrUnavailable))
	if c := get("/readyz"); c != 503 {
		t.Fatalf("/readyz with database down = %d", c)
	}
	// gRPC health, through Connect JSON.
	check := func(service string) (int, string) {
		t.Helper()
		res, err := f.http.Post(f.url+"/grpc.health.v1.Health/Check", "application/json", strings.NewReader(`{"service":"`+service+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out struct{ Status string }
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, strings.TrimPrefix(out.Status, "SERVING_STATUS_")
	}
	if code, status := check(""); code != 200 || status != "SERVING" && status != "NOT_SERVING" {
		t.Fatalf("health check = %d %q", code, status)
	}
	if _, status := check("sigil.v1.KeyManagementService"); status != "NOT_SERVING" {
		t.Fatalf("health with the database down = %q, want NOT_SERVING", status)
	}
	f.store.Recover()
	if _, status := check("sigil.v1.KeyManagementService"); status != "SERVING" {
		t.Fatalf("health = %q, want SERVING", status)
	}
	if code, _ := check("no.such.Service"); code != 404 {
		t.Fatalf("health of an unknown service = %d, want 404", code)
	}
}

// blockingPing is a backend whose Ping waits for its context to end, like
// an HSM that stopped answering.
type blockingPing struct{ hsm.Backend }

func (blockingPing) Ping(ctx context.Context) error {
	<-ctx.Done()
	return fmt.Errorf("%w: %w", hsm.ErrUnavailable, ctx.Err())
}

// TestReadyzHonoursTimeout checks that /readyz answers 503 once its
// timeout passes when the HSM does not answer, instead of hanging.
func TestReadyzHonoursTimeout(t *testing.T) {
	h := New(kms.New(blockingPing{hsmtest.NewMemory()}, keystoretest.NewMemory()), Options{ReadyTimeout: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	client := &http.Client{Timeout: 10 * time.Second}
	res, err := client.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatalf("/readyz did not answer: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d, want 503", res.StatusCode)
	}
}

// slowStore is a store whose GetKey waits for its context to end.
type slowStore struct{ *keystoretest.Memory }

func (slowStore) GetKey(ctx context.Context, _ string) (keystore.Key, error) {
	<-ctx.Done()
	return keystore.Key{}, ctx.Err()
}

// TestDefaultDeadline checks that a call without a deadline of its own
// ends at the server's RequestTimeout rather than hanging.
func TestDefaultDeadline(t *testing.T) {
	h := New(kms.New(hsmtest.NewMemory(), slowStore{keystoretest.NewMemory()}), Options{RequestTimeout: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := sigilv1connect.NewKeyManagementServiceClient(&http.Client{Timeout: 10 * time.Second}, srv.URL)
	_, err := c.GetKey(context.Background(), &sigilv1.GetKeyRequest{Name: "k"})
	wantCode(t, err, connect.CodeDeadlineExceeded)
}
