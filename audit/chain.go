package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
)

// encodingTag opens the canonical encoding of every record, so that a hash
// of this encoding can never be mistaken for one of another format or of a
// later version of this one.
const encodingTag = "sigil-audit-v1"

// ZeroHash returns HashSize zero bytes, the PrevHash of the first record.
func ZeroHash() []byte { return make([]byte, HashSize) }

// Head is the last record of a chain, which the next record continues. The
// zero Head is the head of an empty chain.
type Head struct {
	Seq  int64
	Hash []byte
}

// Seal returns Normalize(r) as the record after head: Seq is head.Seq+1,
// PrevHash is head.Hash (ZeroHash for the empty chain) and Hash is
// ComputeHash of the result. r.Time must already be set.
func Seal(r Record, head Head) Record {
	r = Normalize(r)
	r.Seq = head.Seq + 1
	if head.Seq == 0 {
		r.PrevHash = ZeroHash()
	} else {
		r.PrevHash = clone(head.Hash)
	}
	r.Hash = ComputeHash(r)
	return r
}

// ComputeHash returns SHA-256 of the canonical encoding of r (see
// AppendCanonical): the hash that r.Hash must equal. It ignores r.Hash.
func ComputeHash(r Record) []byte {
	sum := sha256.Sum256(AppendCanonical(nil, r))
	return sum[:]
}

// AppendCanonical appends the canonical encoding of r, every field except
// Hash, to b and returns the result. Integers are big-endian; a string or
// byte string is its length as a uint32 followed by its bytes. In order:
//
//	string  "sigil-audit-v1"
//	uint64  Seq
//	int64   Time, seconds since the Unix epoch (UTC)
//	uint32  Time, nanoseconds within the second
//	string  RequestID, Identity, RPC, Key
//	uint32  KeyVersion
//	string  Outcome, Peer
//	uint32  number of Details entries, then for each, sorted by key
//	        (bytewise): string key, string value
//	bytes   PrevHash
//
// Each field has a fixed place and every variable-length one its length, so
// two different records never share an encoding. This is a stored format:
// changing it breaks the verification of every existing log.
func AppendCanonical(b []byte, r Record) []byte {
	b = appendString(b, encodingTag)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Seq))
	t := r.Time.UTC()
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
	b = appendString(b, r.RequestID)
	b = appendString(b, r.Identity)
	b = appendString(b, r.RPC)
	b = appendString(b, r.Key)
	b = binary.BigEndian.AppendUint32(b, r.KeyVersion)
	b = appendString(b, r.Outcome)
	b = appendString(b, r.Peer)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Details)))
	for _, k := range sortedKeys(r.Details) {
		b = appendString(b, k)
		b = appendString(b, r.Details[k])
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.PrevHash)))
	return append(b, r.PrevHash...)
}

// appendString appends s with its length as a big-endian uint32.
func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// sortedKeys returns the keys of m in bytewise order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// BreakError is the error Verify and Verifier.Check return for the first
// record that does not continue the chain. It wraps ErrBroken.
type BreakError struct {
	// Seq is the seq of the broken record: the edited one, or for a
	// deleted record the one that follows the gap.
	Seq int64
	// Reason says what does not match, for people.
	Reason string
}

// Error returns a message naming the record and the reason.
func (e *BreakError) Error() string {
	return fmt.Sprintf("audit: chain broken at seq %d: %s", e.Seq, e.Reason)
}

// Unwrap returns ErrBroken.
func (e *BreakError) Unwrap() error { return ErrBroken }

// Verifier checks a chain one record at a time, in seq order, from seq 1.
// A Verifier is not safe for concurrent use.
type Verifier struct {
	next    int64
	prev    []byte
	checked int64
	broken  error
}

// NewVerifier returns a Verifier expecting the first record of a chain.
func NewVerifier() *Verifier {
	return &Verifier{next: 1, prev: ZeroHash()}
}

// Check checks that r is the next record of the chain: its Seq follows the
// previous one without a gap (the first is 1), its PrevHash is the previous
// record's Hash (ZeroHash for the first), and its Hash is ComputeHash(r). It
// returns nil if so, or a *BreakError naming r.Seq (or, for a record that
// comes before the expected seq, the expected seq). Once Check has failed
// it fails again for every record.
func (v *Verifier) Check(r Record) error {
	if v.broken != nil {
		return v.broken
	}
	switch {
	case r.Seq > v.next:
		if r.Seq == v.next+1 {
			return v.fail(r.Seq, fmt.Sprintf("record %d is missing", v.next))
		}
		return v.fail(r.Seq, fmt.Sprintf("records %d to %d are missing", v.next, r.Seq-1))
	case r.Seq < v.next:
		return v.fail(v.next, fmt.Sprintf("seq %d comes where %d was expected", r.Seq, v.next))
	case !bytes.Equal(r.PrevHash, v.prev):
		return v.fail(r.Seq, "prev_hash is not the hash of the record before")
	case !bytes.Equal(r.Hash, ComputeHash(r)):
		return v.fail(r.Seq, "hash does not match the record's contents")
	}
	v.next++
	v.prev = clone(r.Hash)
	v.checked++
	return nil
}

// Fail records that the record with the given seq is broken for reason (for
// example, storage could not decode it) and returns the *BreakError, unless
// the chain was already broken, in which case it returns that error.
func (v *Verifier) Fail(seq int64, reason string) error {
	if v.broken != nil {
		return v.broken
	}
	return v.fail(seq, reason)
}

func (v *Verifier) fail(seq int64, reason string) error {
	v.broken = &BreakError{Seq: seq, Reason: reason}
	return v.broken
}

// Checked returns how many records have passed Check.
func (v *Verifier) Checked() int64 { return v.checked }

// Verify reads records with next, in seq order, until next reports none
// are left, and checks that they form one chain from seq 1 (see
// Verifier.Check). It returns how many records passed. If the chain is
// broken, it stops there and returns firstBad, the seq of the first broken
// record, and a *BreakError; for a deleted record that is the seq of the
// record after it. If next or ctx fails, it returns that error and firstBad
// 0. Records deleted from the end of the log cannot be noticed by Verify:
// compare the head with a copy kept elsewhere.
func Verify(ctx context.Context, next func() (Record, bool, error)) (checked, firstBad int64, err error) {
	v := NewVerifier()
	for {
		if err := ctx.Err(); err != nil {
			return v.Checked(), 0, err
		}
		r, ok, err := next()
		if err != nil {
			return v.Checked(), 0, err
		}
		if !ok {
			return v.Checked(), 0, nil
		}
		if err := v.Check(r); err != nil {
			return v.Checked(), err.(*BreakError).Seq, err
		}
	}
}

// Each returns a next function for Verify that yields records in order.
func Each(records []Record) func() (Record, bool, error) {
	i := 0
	return func() (Record, bool, error) {
		if i == len(records) {
			return Record{}, false, nil
		}
		i++
		return records[i-1], true, nil
	}
}
