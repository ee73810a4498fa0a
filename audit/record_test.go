package audit_test

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sigil-kms/sigil/audit"
)

func TestHMAC(t *testing.T) {
	// RFC 4231, test case 2.
	got := audit.HMAC([]byte("Jefe"), []byte("what do ya want for nothing?"))
	if want := "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"; got != want {
		t.Fatalf("HMAC = %s, want %s", got, want)
	}
	if audit.HMAC([]byte("salt1"), []byte("ad")) == audit.HMAC([]byte("salt2"), []byte("ad")) {
		t.Error("HMAC ignores the salt")
	}
}

func TestNormalize(t *testing.T) {
	in := audit.Record{
		Time:      time.Date(2030, 1, 1, 12, 0, 0, 123456789, time.FixedZone("X", 3600)),
		RequestID: "ok",
		Key:       "a\x00b",
		Peer:      "\xff\xfe",
		Identity:  strings.Repeat("é", audit.MaxFieldBytes), // 2 bytes each
		Details:   map[string]string{"x\x00": "1", "y": strings.Repeat("z", audit.MaxFieldBytes+1)},
		PrevHash:  []byte{1},
	}
	out := audit.Normalize(in)
	if want := time.Date(2030, 1, 1, 11, 0, 0, 123456000, time.UTC); !out.Time.Equal(want) || out.Time.Location() != time.UTC {
		t.Errorf("Time = %v, want %v", out.Time, want)
	}
	if out.Key != "a\uFFFDb" || out.Peer != "\uFFFD" || out.RequestID != "ok" {
		t.Errorf("strings not cleaned: %q %q %q", out.Key, out.Peer, out.RequestID)
	}
	if len(out.Identity) != audit.MaxFieldBytes || !utf8.ValidString(out.Identity) {
		t.Errorf("Identity cut to %d bytes, valid UTF-8 %v", len(out.Identity), utf8.ValidString(out.Identity))
	}
	if len(out.Details) != 2 || out.Details["x\uFFFD"] != "1" || len(out.Details["y"]) != audit.MaxFieldBytes {
		t.Errorf("Details = %v", out.Details)
	}
	// The input is not modified, and the copy shares nothing with it.
	if in.Key != "a\x00b" || in.Details["x\x00"] != "1" {
		t.Error("Normalize changed its argument")
	}
	out.PrevHash[0] = 2
	if in.PrevHash[0] != 1 {
		t.Error("Normalize shares PrevHash")
	}
	if d := audit.Normalize(audit.Record{Details: map[string]string{}}).Details; d != nil {
		t.Errorf("empty Details normalized to %v, want nil", d)
	}
}

// TestJSONGolden fixes the JSON line format that SIEMs parse.
func TestJSONGolden(t *testing.T) {
	r := audit.Seal(goldenRecord(), audit.Head{})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"seq":1,"time":"2025-01-02T03:04:05.123456Z","request_id":"req-1",` +
		`"identity":"spiffe://example.org/app","rpc":"sigil.v1.KeyManagementService/Encrypt",` +
		`"key":"payments","key_version":3,"outcome":"ok","peer":"127.0.0.1:5000",` +
		`"details":{"aad_hmac":"ab","b":"c"},` +
		`"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000",` +
		`"hash":"` + goldenHash1 + `"}`
	if string(b) != want {
		t.Fatalf("JSON\n got %s\nwant %s", b, want)
	}
	var back audit.Record
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Time.Equal(r.Time) || back.Key != r.Key || !maps.Equal(back.Details, r.Details) ||
		string(back.Hash) != string(r.Hash) || string(back.PrevHash) != string(r.PrevHash) {
		t.Fatalf("round trip: got %+v, want %+v", back, r)
	}
	if got := audit.ComputeHash(back); string(got) != string(r.Hash) {
		t.Fatal("decoded record does not hash to its Hash")
	}
	empty, _ := json.Marshal(audit.Record{})
	if !strings.Contains(string(empty), `"details":{}`) {
		t.Errorf("empty Details encode as %s", empty)
	}
}
