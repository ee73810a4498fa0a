package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/softhsm"
)

// TestProtocolsOnOnePort calls one cleartext sigild with Connect over
// HTTP/1.1, gRPC over h2c and gRPC-Web.
func TestProtocolsOnOnePort(t *testing.T) {
	ctx := context.Background()
	p := startSigild(t, softhsm.NewToken(t), postgrestest.NewDatabase(t))
	h2c := &http.Client{Transport: &http.Transport{Protocols: new(http.Protocols)}}
	h2c.Transport.(*http.Transport).Protocols.SetUnencryptedHTTP2(true)
	clients := map[string]sigilv1connect.KeyManagementServiceClient{
		"connect-http1": sigilv1connect.NewKeyManagementServiceClient(http.DefaultClient, p.url),
		"grpc-h2c":      sigilv1connect.NewKeyManagementServiceClient(h2c, p.url, connect.WithGRPC()),
		"grpc-web":      sigilv1connect.NewKeyManagementServiceClient(http.DefaultClient, p.url, connect.WithGRPCWeb()),
	}
	for name, c := range clients {
		t.Run(name, func(t *testing.T) {
			key := "k-" + name
			if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: key, Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
				t.Fatal(err)
			}
			enc, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: key, Plaintext: []byte(name)})
			if err != nil {
				t.Fatal(err)
			}
			dec, err := c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: key, Ciphertext: enc.GetCiphertext()})
			if err != nil || string(dec.GetPlaintext()) != name {
				t.Fatalf("Decrypt = %v, %v", dec, err)
			}
			_, err = c.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "missing"})
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("GetKey(missing) = %v", err)
			}
		})
	}
}

// TestCurlHTTP1 posts Connect JSON over HTTP/1.1, as the README's curl
// example does.
func TestCurlHTTP1(t *testing.T) {
	p := startSigild(t, softhsm.NewToken(t), postgrestest.NewDatabase(t))
	post := func(rpc, body string) (int, map[string]any, string) {
		t.Helper()
		res, err := http.Post(p.url+"/sigil.v1.KeyManagementService/"+rpc, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.ProtoMajor != 1 {
			t.Fatalf("%s over %s, want HTTP/1.1", rpc, res.Proto)
		}
		var out map[string]any
		if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, out, res.Header.Get("Sigil-Request-Id")
	}
	if code, out, _ := post("CreateKey", `{"name":"orders","algorithm":"ALGORITHM_AES_256_GCM"}`); code != 200 {
		t.Fatalf("CreateKey: %d %v", code, out)
	}
	code, out, _ := post("Encrypt", `{"name":"orders","plaintext":"aGVsbG8="}`)
	if code != 200 || out["keyVersion"] != float64(1) {
		t.Fatalf("Encrypt: %d %v", code, out)
	}
	code, out, _ = post("Decrypt", `{"name":"orders","ciphertext":"`+out["ciphertext"].(string)+`"}`)
	if code != 200 || out["plaintext"] != "aGVsbG8=" {
		t.Fatalf("Decrypt: %d %v", code, out)
	}
	code, out, id := post("Decrypt", `{"name":"orders","ciphertext":"AAAA"}`)
	if code != 400 || out["code"] != "invalid_argument" || out["message"] != "decryption failed" || id == "" {
		t.Fatalf("bad ciphertext: %d %v id=%q", code, out, id)
	}
}

// TestTLS starts sigild with a certificate and calls it over HTTP/2 with
// TLS; a cleartext request to the same port fails.
func TestTLS(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pool := writeCert(t, dir)
	p := startSigild(t, softhsm.NewToken(t), postgrestest.NewDatabase(t),
		"--tls-cert", filepath.Join(dir, "cert.pem"), "--tls-key", filepath.Join(dir, "key.pem"))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	client := &http.Client{Transport: tr}
	c := sigilv1connect.NewKeyManagementServiceClient(client, p.url, connect.WithGRPC())
	if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "tls", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
		t.Fatal(err)
	}
	res, err := client.Get(p.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ProtoMajor != 2 || res.StatusCode != 200 {
		t.Fatalf("/healthz over TLS: %s %d", res.Proto, res.StatusCode)
	}
	plain := "http" + p.url[len("https"):]
	if res, err := http.Get(plain + "/healthz"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("cleartext request to the TLS port succeeded")
		}
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key to
// dir and returns a pool that trusts it.
func writeCert(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sigild test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("cert.pem", "CERTIFICATE", der)
	write("key.pem", "PRIVATE KEY", keyDER)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
