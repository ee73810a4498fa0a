package audit_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sigil-kms/sigil/audit"
)

// maxJSONMicros is the last microsecond of the year 9999, the last time a
// JSON record can hold (RFC 3339).
const maxJSONMicros = 253402300799999999

// FuzzRecord seals records whose caller-controlled fields (request ID,
// key, identity, peer, Details, ...) are arbitrary strings. Every field of
// a sealed record is valid UTF-8 without NUL and at most MaxFieldBytes;
// sealing is idempotent; two records that differ only in where one field
// ends and the next begins hash differently; and the record's JSON line
// decodes to the same record, which a Verifier accepts, as a SIEM holding
// the line would.
func FuzzRecord(f *testing.F) {
	f.Add("req-1", "spiffe://prod/ns/a", "sigil.v1.KeyManagementService/Encrypt", "k", uint32(1), "ok", "10.0.0.1:5000", "aad_hmac", "00ff", int64(1893456000123456))
	f.Add("a\x00b", "\xff\xfe", "", "k\u2028", uint32(0), "permission_denied", "[::1]:1", "x\x00", "\xed\xa0\x80", int64(0))
	f.Add(strings.Repeat("é", audit.MaxFieldBytes), "", "", "", uint32(1<<32-1), "intent", "", "", "", int64(maxJSONMicros))
	f.Add(strings.Repeat("\xff", audit.MaxFieldBytes), "<script>&", "", "", uint32(7), "", "", "\uFFFD", "1", int64(-1))
	f.Fuzz(func(t *testing.T, requestID, identity, rpc, key string, version uint32, outcome, peer, dk, dv string, micros int64) {
		r := audit.Record{
			Time:      time.UnixMicro(int64(uint64(micros) % (maxJSONMicros + 1))).In(time.FixedZone("X", 3600)),
			RequestID: requestID, Identity: identity, RPC: rpc, Key: key, KeyVersion: version,
			Outcome: outcome, Peer: peer,
		}
		if dk != "" || dv != "" {
			r.Details = map[string]string{dk: dv, "\xff" + dk: dv + "\x00"}
		}
		first := audit.Seal(audit.Record{Time: r.Time}, audit.Head{})
		head := audit.Head{Seq: first.Seq, Hash: first.Hash}
		sealed := audit.Seal(r, head)
		for _, s := range fieldsOf(sealed) {
			if !utf8.ValidString(s) || strings.Contains(s, "\x00") || len(s) > audit.MaxFieldBytes {
				t.Fatalf("sealed field %q: valid UTF-8 %v, %d bytes", s, utf8.ValidString(s), len(s))
			}
		}
		if again := audit.Seal(sealed, head); !reflect.DeepEqual(again, sealed) {
			t.Fatalf("sealing twice changed the record:\n%+v\n%+v", sealed, again)
		}
		if shifted := shift(sealed); shifted != nil && bytes.Equal(audit.ComputeHash(*shifted), sealed.Hash) {
			t.Fatalf("records %+v and %+v hash the same", sealed, *shifted)
		}

		line, err := json.Marshal(sealed)
		if err != nil {
			t.Fatalf("JSON of %+v: %v", sealed, err)
		}
		var back audit.Record
		if err := json.Unmarshal(line, &back); err != nil {
			t.Fatalf("decoding %s: %v", line, err)
		}
		if !back.Time.Equal(sealed.Time) {
			t.Fatalf("time %v came back as %v", sealed.Time, back.Time)
		}
		back.Time = sealed.Time
		if !reflect.DeepEqual(back, sealed) {
			t.Fatalf("JSON line %s decodes to\n%+v, not\n%+v", line, back, sealed)
		}
		v := audit.NewVerifier()
		if err := v.Check(first); err != nil {
			t.Fatal(err)
		}
		if err := v.Check(back); err != nil {
			t.Fatalf("a Verifier refuses the decoded record: %v", err)
		}
	})
}

// fieldsOf returns the string fields and Details of r.
func fieldsOf(r audit.Record) []string {
	out := []string{r.RequestID, r.Identity, r.RPC, r.Key, r.Outcome, r.Peer}
	for k, v := range r.Details {
		out = append(out, k, v)
	}
	return out
}

// shift returns r with the first byte of Identity moved to the end of
// RequestID, so that their concatenation stays the same, or nil if
// Identity is empty.
func shift(r audit.Record) *audit.Record {
	if r.Identity == "" {
		return nil
	}
	s := r.Clone()
	s.RequestID += s.Identity[:1]
	s.Identity = s.Identity[1:]
	return &s
}
