package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/structpb"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/softhsm"
)

// scrape reads sigild's /metrics and returns the metric families by name.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", res.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// sum adds the values of family's samples whose labels include want.
func sum(fams map[string]*dto.MetricFamily, family string, want map[string]string) float64 {
	f, ok := fams[family]
	if !ok {
		return 0
	}
	total := 0.0
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			total += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			total += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// TestMetricsAndRequestLog drives every RPC of the service once through a
// real sigild, then checks that each RPC's request counter, the HSM, audit,
// cache and scheduler metrics moved, and that the request log lines carry
// the request's facts but none of the payloads sent.
func TestMetricsAndRequestLog(t *testing.T) {
	tok := softhsm.NewToken(t)
	p := startSigild(t, tok, postgrestest.NewDatabase(t), "--scheduler-interval", "50ms")
	c := p.client()
	ctx := context.Background()

	// A payload that must never reach the log, in every form a handler
	// sees it.
	var canary [12]byte
	_, _ = rand.Read(canary[:])
	secret := "canary-" + hex.EncodeToString(canary[:])
	secretForms := []string{secret, base64.StdEncoding.EncodeToString([]byte(secret)), hex.EncodeToString([]byte(secret))}

	must := func(rpc string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", rpc, err)
		}
	}
	aes, ec := "metrics-aes", "metrics-ec"
	called := map[string]bool{}
	call := func(rpc string, err error) { t.Helper(); must(rpc, err); called[rpc] = true }

	_, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: aes, Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM})
	call("CreateKey", err)
	_, err = c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: ec, Algorithm: sigilv1.Algorithm_ALGORITHM_EC_P256_SHA256})
	must("CreateKey", err)
	_, err = c.GetKey(ctx, &sigilv1.GetKeyRequest{Name: aes})
	call("GetKey", err)
	_, err = c.ListKeys(ctx, &sigilv1.ListKeysRequest{})
	call("ListKeys", err)
	_, err = c.UpdateKey(ctx, &sigilv1.UpdateKeyRequest{Name: aes})
	call("UpdateKey", err)
	enc, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: aes, Plaintext: []byte(secret), AssociatedData: []byte(secret)})
	call("Encrypt", err)
	_, err = c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: aes, Ciphertext: enc.GetCiphertext(), AssociatedData: []byte(secret)})
	call("Decrypt", err)
	_, err = c.GenerateDataKey(ctx, &sigilv1.GenerateDataKeyRequest{Name: aes, AssociatedData: []byte(secret)})
	call("GenerateDataKey", err)
	_, err = c.ReEncrypt(ctx, &sigilv1.ReEncryptRequest{Name: aes, Ciphertext: enc.GetCiphertext(), AssociatedData: []byte(secret)})
	call("ReEncrypt", err)
	_, err = c.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: aes, Immediate: true})
	call("RotateKey", err)
	_, err = c.ListKeyVersions(ctx, &sigilv1.ListKeyVersionsRequest{Name: aes})
	call("ListKeyVersions", err)
	_, err = c.DisableKeyVersion(ctx, &sigilv1.DisableKeyVersionRequest{Name: aes, Version: 1})
	call("DisableKeyVersion", err)
	_, err = c.EnableKeyVersion(ctx, &sigilv1.EnableKeyVersionRequest{Name: aes, Version: 1})
	call("EnableKeyVersion", err)
	_, err = c.ScheduleKeyVersionDestruction(ctx, &sigilv1.ScheduleKeyVersionDestructionRequest{Name: aes, Version: 1})
	call("ScheduleKeyVersionDestruction", err)
	_, err = c.RestoreKeyVersion(ctx, &sigilv1.RestoreKeyVersionRequest{Name: aes, Version: 1})
	call("RestoreKeyVersion", err)
	sig, err := c.Sign(ctx, &sigilv1.SignRequest{Name: ec, Input: &sigilv1.SignRequest_Message{Message: []byte(secret)}})
	call("Sign", err)
	_, err = c.Verify(ctx, &sigilv1.VerifyRequest{Name: ec, Input: &sigilv1.VerifyRequest_Message{Message: []byte(secret)}, Signature: sig.GetSignature()})
	call("Verify", err)
	_, err = c.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Name: ec})
	call("GetPublicKey", err)
	claims, err := structpb.NewStruct(map[string]any{"sub": secret})
	must("claims", err)
	_, err = c.SignJWT(ctx, &sigilv1.SignJWTRequest{Name: ec, Claims: claims})
	call("SignJWT", err)
	// One refused request: its code is counted too.
	_, err = c.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "no-such-key"})
	if err == nil {
		t.Fatal("GetKey of a missing key succeeded")
	}

	res, err := http.Get(p.url + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /.well-known/jwks.json: %s", res.Status)
	}

	methods := sigilv1.File_sigil_v1_service_proto.Services().ByName("KeyManagementService").Methods()
	for i := range methods.Len() {
		if name := string(methods.Get(i).Name()); !called[name] {
			t.Errorf("the test does not call %s", name)
		}
	}

	// The scheduler runs every 50ms; wait for its first pass to be
	// counted, up to a deadline.
	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(30 * time.Second); ; {
		fams = scrape(t, p.url)
		if sum(fams, "sigil_scheduler_runs_total", nil) > 0 || time.Now().After(deadline) {
			break
		}
		p.waitOutput(time.Now().Add(100 * time.Millisecond))
	}
	for rpc := range called {
		want := 1.0
		if rpc == "CreateKey" {
			want = 2
		}
		if got := sum(fams, "sigil_requests_total", map[string]string{"rpc": rpc, "code": "ok"}); got != want {
			t.Errorf("sigil_requests_total{rpc=%q,code=ok} = %v, want %v", rpc, got, want)
		}
		if got := sum(fams, "sigil_request_duration_seconds", map[string]string{"rpc": rpc}); got < want {
			t.Errorf("sigil_request_duration_seconds{rpc=%q} has %v samples, want %v", rpc, got, want)
		}
	}
	if got := sum(fams, "sigil_requests_total", map[string]string{"rpc": "JWKS", "code": "ok"}); got != 1 {
		t.Errorf("sigil_requests_total{rpc=JWKS,code=ok} = %v, want 1", got)
	}
	if got := sum(fams, "sigil_requests_total", map[string]string{"rpc": "GetKey", "code": "not_found"}); got != 1 {
		t.Errorf("sigil_requests_total{rpc=GetKey,code=not_found} = %v, want 1", got)
	}
	for _, op := range []string{"generate_key", "seal", "open", "sign"} {
		if got := sum(fams, "sigil_hsm_call_duration_seconds", map[string]string{"op": op}); got < 1 {
			t.Errorf("sigil_hsm_call_duration_seconds{op=%q} has no samples", op)
		}
	}
	for _, name := range []string{"sigil_audit_batch_records", "sigil_audit_flush_duration_seconds", "sigil_key_cache_hits_total", "sigil_scheduler_runs_total"} {
		if got := sum(fams, name, nil); got <= 0 {
			t.Errorf("%s = %v, want more than 0", name, got)
		}
	}
	for _, name := range []string{"sigil_key_cache_misses_total", "sigil_key_cache_invalidations_total", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s is missing", name)
		}
	}

	// The request log: a JSON line per request with its facts, and no
	// payload anywhere in the output.
	out := p.output()
	for _, form := range secretForms {
		if strings.Contains(out, form) {
			t.Fatalf("sigild's log contains a payload sent in a request (%q)", form)
		}
	}
	var encryptLine map[string]any
	for _, line := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "request" {
			continue
		}
		if m["rpc"] == "Encrypt" {
			encryptLine = m
		}
	}
	if encryptLine == nil {
		t.Fatalf("no request log line for Encrypt in:\n%s", out)
	}
	for _, k := range []string{"request_id", "identity", "rpc", "key", "version", "code", "duration_ms"} {
		if _, ok := encryptLine[k]; !ok {
			t.Errorf("the request log line %v has no %q", encryptLine, k)
		}
	}
	if encryptLine["key"] != aes || encryptLine["code"] != "ok" || encryptLine["version"] != float64(1) || encryptLine["identity"] != "dev" {
		t.Errorf("request log line = %v, want key %s, version 1, code ok, identity dev", encryptLine, aes)
	}
}
