// Package audit is Sigil's tamper-evident, fail-closed audit log: the Record
// written for every request, the hash chain that links records, its
// verification, and the Log interface with two small implementations (an
// in-memory Log for tests and a JSON-lines Tee for SIEMs). The PostgreSQL
// Log lives in audit/postgres.
//
// # What a record holds
//
// A Record says who (Identity, Peer) called which RPC on which key version,
// when, with which outcome, under which request ID. It never holds
// plaintext, associated data, ciphertext, signatures, tokens or key
// material, and callers must not put any of those in Details: to let an
// auditor correlate requests by their associated data, store HMAC(salt,
// associatedData) under DetailAADHMAC instead.
//
// # The chain
//
// Every record carries the hash of the record before it (PrevHash; 32 zero
// bytes for the first) and its own Hash, SHA-256 over a canonical encoding
// of all its other fields (see ComputeHash). Editing, inserting or deleting
// a record in the middle of the log therefore breaks the chain at that
// point, and Verify reports where. The chain has no secret: someone who can
// write to the log's storage can rewrite a whole suffix and recompute every
// hash after it, and can drop records from the end. Copies of the hashes
// kept elsewhere (the JSON lines of Tee in a SIEM, or a head hash exported
// from time to time) anchor the chain against that.
//
// # Fail-closed
//
// Log.Append returns only once the record is durable. Any error means the
// record is not known to be durable, and the caller must fail the request
// without returning its result.
//
// # Concurrency
//
// Record values and the package's functions are safe to use from many
// goroutines. Memory and the Log returned by Tee are safe for concurrent
// use; a Verifier is not.
package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrUnavailable is wrapped by every error from Append that means the
// record could not be written (storage down, refusing writes, or the Log
// closed). The request it describes must fail, with Unavailable.
var ErrUnavailable = errors.New("audit: log unavailable")

// ErrClosed is wrapped, together with ErrUnavailable, by the error of an
// Append called after Close.
var ErrClosed = errors.New("audit: log closed")

// ErrBroken is wrapped by the error Verify returns when the chain is broken;
// that error is a *BreakError naming the record.
var ErrBroken = errors.New("audit: chain broken")

// OutcomeOK is the Outcome of a request that succeeded. Any other outcome is
// the snake_case name of a Connect error code, such as "permission_denied".
const OutcomeOK = "ok"

// OutcomeIntent marks the record written before a change to keys is made
// (an admin RPC); the record of its outcome follows.
const OutcomeIntent = "intent"

// DetailAADHMAC is the Details key under which callers store HMAC(salt,
// associated data) of a request.
const DetailAADHMAC = "aad_hmac"

// MaxFieldBytes is the longest string, in bytes, that Normalize keeps in a
// field or a Details key or value; longer ones are cut at a character
// boundary. Fields may carry caller-controlled text (a key name that failed
// validation, a request ID), so this bounds the size of every record.
const MaxFieldBytes = 4096

// HashSize is the size in bytes of Hash and PrevHash.
const HashSize = sha256.Size

// Record is one audit record: one request, allowed, denied or failed. The
// caller of Log.Append sets the fields from RequestID to Details; the Log
// sets Seq, Time, PrevHash and Hash, overwriting what the caller put there.
// A Record must never contain plaintext, associated data, ciphertext,
// signatures, tokens or key material.
type Record struct {
	// Seq is the record's position in the chain, from 1, without gaps.
	Seq int64
	// Time is when the Log accepted the record, in UTC, to the microsecond.
	Time time.Time
	// RequestID identifies the request, for correlation with other logs.
	RequestID string
	// Identity is the authenticated caller, or "" if there was none.
	Identity string
	// RPC is the procedure called, such as "sigil.v1.KeyManagementService/Encrypt".
	RPC string
	// Key is the key name the request named, or "".
	Key string
	// KeyVersion is the key version used, or 0 if none was.
	KeyVersion uint32
	// Outcome is OutcomeOK or the snake_case name of a Connect error code.
	Outcome string
	// Peer is the network address of the caller.
	Peer string
	// Details holds further facts, such as DetailAADHMAC. Never secrets.
	Details map[string]string
	// PrevHash is the Hash of the record before, or HashSize zero bytes.
	PrevHash []byte
	// Hash is SHA-256 over the canonical encoding of the other fields.
	Hash []byte
}

// HMAC returns the HMAC-SHA256 of data keyed with salt, in lower-case hex.
// Use it to record associated data (or any other caller input that must not
// be stored) in Details: equal inputs give equal values, so records can be
// correlated, but without salt the value reveals nothing, even for guessable
// inputs. salt should be at least 32 random bytes, secret, and stable for a
// deployment.
func HMAC(salt, data []byte) string {
	m := hmac.New(sha256.New, salt)
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil))
}

// Normalize returns a copy of r fit to be stored and hashed: Time in UTC and
// cut to the microsecond (what PostgreSQL keeps), and every string field,
// Details key and value made valid UTF-8 without NUL bytes (each run of
// invalid bytes, and each NUL, becomes U+FFFD) and cut to MaxFieldBytes. Empty Details
// become nil. PostgreSQL text cannot hold NUL or invalid UTF-8, so without
// this one request carrying such bytes would make the write of a whole
// group of records fail. Details keys that become equal keep the value of
// the key that sorts last before cleaning.
func Normalize(r Record) Record {
	r.Time = r.Time.UTC().Truncate(time.Microsecond)
	r.RequestID = cleanString(r.RequestID)
	r.Identity = cleanString(r.Identity)
	r.RPC = cleanString(r.RPC)
	r.Key = cleanString(r.Key)
	r.Outcome = cleanString(r.Outcome)
	r.Peer = cleanString(r.Peer)
	if len(r.Details) == 0 {
		r.Details = nil
	} else {
		d := make(map[string]string, len(r.Details))
		for _, k := range sortedKeys(r.Details) {
			d[cleanString(k)] = cleanString(r.Details[k])
		}
		r.Details = d
	}
	r.PrevHash = clone(r.PrevHash)
	r.Hash = clone(r.Hash)
	return r
}

// Clone returns a deep copy of r, sharing no map or slice with it.
func (r Record) Clone() Record {
	if r.Details != nil {
		r.Details = maps.Clone(r.Details)
	}
	r.PrevHash = clone(r.PrevHash)
	r.Hash = clone(r.Hash)
	return r
}

// cleanString returns s as valid UTF-8 without NUL, at most MaxFieldBytes
// long.
func cleanString(s string) string {
	if len(s) <= MaxFieldBytes && utf8.ValidString(s) && !strings.Contains(s, "\x00") {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	if len(s) > MaxFieldBytes {
		cut := MaxFieldBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// clone returns a copy of b, nil if b is nil.
func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// jsonRecord is the JSON form of a Record, one object per JSON line.
type jsonRecord struct {
	Seq        int64             `json:"seq"`
	Time       time.Time         `json:"time"`
	RequestID  string            `json:"request_id"`
	Identity   string            `json:"identity"`
	RPC        string            `json:"rpc"`
	Key        string            `json:"key"`
	KeyVersion uint32            `json:"key_version"`
	Outcome    string            `json:"outcome"`
	Peer       string            `json:"peer"`
	Details    map[string]string `json:"details"`
	PrevHash   string            `json:"prev_hash"`
	Hash       string            `json:"hash"`
}

// MarshalJSON encodes r as a JSON object with snake_case field names, Time
// in RFC 3339 in UTC, Details as an object ({} when empty) and the hashes in
// lower-case hex. The format is stable: SIEMs parse it.
func (r Record) MarshalJSON() ([]byte, error) {
	d := r.Details
	if d == nil {
		d = map[string]string{}
	}
	return json.Marshal(jsonRecord{
		Seq: r.Seq, Time: r.Time.UTC(), RequestID: r.RequestID, Identity: r.Identity,
		RPC: r.RPC, Key: r.Key, KeyVersion: r.KeyVersion, Outcome: r.Outcome, Peer: r.Peer,
		Details: d, PrevHash: hex.EncodeToString(r.PrevHash), Hash: hex.EncodeToString(r.Hash),
	})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (r *Record) UnmarshalJSON(b []byte) error {
	var j jsonRecord
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	prev, err := hex.DecodeString(j.PrevHash)
	if err != nil {
		return fmt.Errorf("audit: prev_hash: %w", err)
	}
	hash, err := hex.DecodeString(j.Hash)
	if err != nil {
		return fmt.Errorf("audit: hash: %w", err)
	}
	if len(j.Details) == 0 {
		j.Details = nil
	}
	*r = Record{
		Seq: j.Seq, Time: j.Time.UTC(), RequestID: j.RequestID, Identity: j.Identity,
		RPC: j.RPC, Key: j.Key, KeyVersion: j.KeyVersion, Outcome: j.Outcome, Peer: j.Peer,
		Details: j.Details, PrevHash: prev, Hash: hash,
	}
	return nil
}
