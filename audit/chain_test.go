package audit_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/audit"
)

// goldenRecord is the fixed record of the golden vectors.
func goldenRecord() audit.Record {
	return audit.Record{
		Seq:        1,
		Time:       time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC),
		RequestID:  "req-1",
		Identity:   "spiffe://example.org/app",
		RPC:        "sigil.v1.KeyManagementService/Encrypt",
		Key:        "payments",
		KeyVersion: 3,
		Outcome:    "ok",
		Peer:       "127.0.0.1:5000",
		Details:    map[string]string{"b": "c", "aad_hmac": "ab"},
		PrevHash:   audit.ZeroHash(),
	}
}

// Golden vectors: the canonical encoding and hashes of goldenRecord and of
// the record after it. They must never change; a change breaks every
// stored log. They were computed by an independent Python implementation
// of the encoding, not by this package.
const (
	goldenHash1 = "3af0052418d1062c7350e6162d0d15c46da8e30e04f9b42bc8555e07c2840096"
	goldenHash2 = "502400720076c4340cfc92459e8e24b7763e1f6a9d9b1682417ee1d32b507a10"
)

// goldenEncoding spells out the canonical encoding of goldenRecord field by
// field, independently of AppendCanonical.
func goldenEncoding() string {
	str := func(s string) string {
		return hex.EncodeToString([]byte{0, 0, 0, byte(len(s))}) + hex.EncodeToString([]byte(s))
	}
	return str("sigil-audit-v1") +
		"0000000000000001" + // seq
		"0000000067760225" + // 2025-01-02T03:04:05Z in Unix seconds
		"075bca00" + // 123456000 ns
		str("req-1") + str("spiffe://example.org/app") +
		str("sigil.v1.KeyManagementService/Encrypt") + str("payments") +
		"00000003" + // key version
		str("ok") + str("127.0.0.1:5000") +
		"00000002" + str("aad_hmac") + str("ab") + str("b") + str("c") +
		"00000020" + strings.Repeat("00", 32)
}

func TestGoldenEncoding(t *testing.T) {
	r := goldenRecord()
	if got, want := hex.EncodeToString(audit.AppendCanonical(nil, r)), goldenEncoding(); got != want {
		t.Fatalf("canonical encoding\n got %s\nwant %s", got, want)
	}
	// Hash is not part of the encoding.
	r.Hash = []byte("anything")
	if got, want := hex.EncodeToString(audit.AppendCanonical(nil, r)), goldenEncoding(); got != want {
		t.Fatalf("encoding depends on Hash")
	}
	// Neither is the time zone.
	r.Time = r.Time.In(time.FixedZone("X", -7*3600))
	if got := hex.EncodeToString(audit.ComputeHash(r)); got != goldenHash1 {
		t.Fatalf("hash of the golden record = %s, want %s", got, goldenHash1)
	}
}

func TestGoldenChain(t *testing.T) {
	first := goldenRecord()
	sealed := audit.Seal(first, audit.Head{})
	if got := hex.EncodeToString(sealed.Hash); got != goldenHash1 {
		t.Fatalf("first hash = %s, want %s", got, goldenHash1)
	}
	second := goldenRecord()
	second.RequestID = "req-2"
	second.Outcome = "permission_denied"
	second.Details = nil
	second.Time = second.Time.Add(time.Second)
	sealed2 := audit.Seal(second, audit.Head{Seq: sealed.Seq, Hash: sealed.Hash})
	if sealed2.Seq != 2 || !bytes.Equal(sealed2.PrevHash, sealed.Hash) {
		t.Fatalf("second record: Seq %d, PrevHash %x", sealed2.Seq, sealed2.PrevHash)
	}
	if got := hex.EncodeToString(sealed2.Hash); got != goldenHash2 {
		t.Fatalf("second hash = %s, want %s", got, goldenHash2)
	}
}

// chain returns n sealed records.
func chain(n int) []audit.Record {
	var out []audit.Record
	var head audit.Head
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		r := goldenRecord()
		r.RequestID = "req-" + string(rune('a'+i))
		r.Time = base.Add(time.Duration(i) * time.Millisecond)
		s := audit.Seal(r, head)
		head = audit.Head{Seq: s.Seq, Hash: s.Hash}
		out = append(out, s)
	}
	return out
}

func TestVerifyValid(t *testing.T) {
	for _, n := range []int{0, 1, 2, 10} {
		checked, bad, err := audit.Verify(context.Background(), audit.Each(chain(n)))
		if err != nil || bad != 0 || checked != int64(n) {
			t.Errorf("Verify(%d records) = (%d, %d, %v)", n, checked, bad, err)
		}
	}
}

func TestVerifyTampered(t *testing.T) {
	const n, k = 6, 4 // tamper with record k of n
	edits := []struct {
		name string
		edit func(rs []audit.Record) []audit.Record
		bad  int64
		// checked is the number of records checked before the bad one:
		// k-1 unless given (as checked+1).
		checked int64
	}{
		{"seq", func(rs []audit.Record) []audit.Record { rs[k-1].Seq = 100; return rs }, 100, 0},
		{"time", func(rs []audit.Record) []audit.Record { rs[k-1].Time = rs[k-1].Time.Add(time.Microsecond); return rs }, k, 0},
		{"time+2^64ns", func(rs []audit.Record) []audit.Record {
			// Would wrap to the same value if Time were encoded as int64 nanoseconds.
			for range 4 {
				rs[k-1].Time = rs[k-1].Time.Add(1 << 62)
			}
			return rs
		}, k, 0},
		{"request_id", func(rs []audit.Record) []audit.Record { rs[k-1].RequestID += "x"; return rs }, k, 0},
		{"identity", func(rs []audit.Record) []audit.Record { rs[k-1].Identity = "mallory"; return rs }, k, 0},
		{"rpc", func(rs []audit.Record) []audit.Record { rs[k-1].RPC = "Decrypt"; return rs }, k, 0},
		{"key", func(rs []audit.Record) []audit.Record { rs[k-1].Key = "other"; return rs }, k, 0},
		{"key_version", func(rs []audit.Record) []audit.Record { rs[k-1].KeyVersion++; return rs }, k, 0},
		{"outcome", func(rs []audit.Record) []audit.Record { rs[k-1].Outcome = "ok!"; return rs }, k, 0},
		{"peer", func(rs []audit.Record) []audit.Record { rs[k-1].Peer = ""; return rs }, k, 0},
		{"details value", func(rs []audit.Record) []audit.Record { rs[k-1].Details["b"] = "d"; return rs }, k, 0},
		{"details added", func(rs []audit.Record) []audit.Record { rs[k-1].Details["z"] = ""; return rs }, k, 0},
		{"details removed", func(rs []audit.Record) []audit.Record { delete(rs[k-1].Details, "b"); return rs }, k, 0},
		{"details key/value shift", func(rs []audit.Record) []audit.Record {
			rs[k-1].Details = map[string]string{"aad_hmacab": "", "b": "c"}
			return rs
		}, k, 0},
		{"prev_hash", func(rs []audit.Record) []audit.Record { rs[k-1].PrevHash[0] ^= 1; return rs }, k, 0},
		{"hash", func(rs []audit.Record) []audit.Record { rs[k-1].Hash[31] ^= 1; return rs }, k, 0},
		{"hash truncated", func(rs []audit.Record) []audit.Record { rs[k-1].Hash = rs[k-1].Hash[:31]; return rs }, k, 0},
		{"rehashed", func(rs []audit.Record) []audit.Record {
			rs[k-1].Identity = "mallory"
			rs[k-1].Hash = audit.ComputeHash(rs[k-1])
			return rs
		}, k + 1, k + 1},
		{"deleted", func(rs []audit.Record) []audit.Record { return append(rs[:k-1], rs[k:]...) }, k + 1, 0},
		{"first deleted", func(rs []audit.Record) []audit.Record { return rs[1:] }, 2, 1},
		{"duplicated", func(rs []audit.Record) []audit.Record {
			return append(rs[:k:k], append([]audit.Record{rs[k-1]}, rs[k:]...)...)
		}, k + 1, k + 1},
		{"swapped", func(rs []audit.Record) []audit.Record { rs[k-1], rs[k] = rs[k], rs[k-1]; return rs }, k + 1, 0},
		{"first prev_hash", func(rs []audit.Record) []audit.Record { rs[0].PrevHash = nil; return rs }, 1, 1},
	}
	for _, e := range edits {
		t.Run(e.name, func(t *testing.T) {
			rs := e.edit(chain(n))
			checked, bad, err := audit.Verify(context.Background(), audit.Each(rs))
			var be *audit.BreakError
			if bad != e.bad || !errors.Is(err, audit.ErrBroken) || !errors.As(err, &be) || be.Seq != e.bad {
				t.Fatalf("Verify = (%d, %d, %v), want first bad %d", checked, bad, err, e.bad)
			}
			wantChecked := int64(k - 1)
			if e.checked != 0 {
				wantChecked = e.checked - 1
			}
			if checked != wantChecked {
				t.Errorf("checked = %d, want %d", checked, wantChecked)
			}
		})
	}
}

// TestVerifyTruncatedTail documents a limit of any hash chain: dropping the
// last records leaves a valid, shorter chain. Anchor the head elsewhere.
func TestVerifyTruncatedTail(t *testing.T) {
	checked, bad, err := audit.Verify(context.Background(), audit.Each(chain(5)[:4]))
	if err != nil || bad != 0 || checked != 4 {
		t.Fatalf("Verify = (%d, %d, %v)", checked, bad, err)
	}
}

func TestVerifyErrors(t *testing.T) {
	boom := errors.New("boom")
	rs := chain(3)
	i := 0
	checked, bad, err := audit.Verify(context.Background(), func() (audit.Record, bool, error) {
		if i == 2 {
			return audit.Record{}, false, boom
		}
		i++
		return rs[i-1], true, nil
	})
	if !errors.Is(err, boom) || bad != 0 || checked != 2 {
		t.Errorf("Verify with a failing reader = (%d, %d, %v)", checked, bad, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := audit.Verify(ctx, audit.Each(rs)); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with a cancelled context = %v", err)
	}
}

func TestVerifierStaysBroken(t *testing.T) {
	rs := chain(3)
	v := audit.NewVerifier()
	if err := v.Check(rs[0]); err != nil {
		t.Fatal(err)
	}
	if err := v.Fail(2, "undecodable"); err == nil {
		t.Fatal("Fail returned nil")
	}
	err := v.Check(rs[1])
	var be *audit.BreakError
	if !errors.As(err, &be) || be.Seq != 2 || be.Reason != "undecodable" {
		t.Fatalf("Check after Fail = %v", err)
	}
	if v.Checked() != 1 {
		t.Errorf("Checked = %d", v.Checked())
	}
}
