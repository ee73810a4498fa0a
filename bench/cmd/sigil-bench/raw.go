package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/pkcs11"
)

// rawKeyType returns the HSM key type an operation needs.
func rawKeyType(rpc string) hsm.KeyType {
	switch rpc {
	case "SignES256", "SignJWTES256":
		return hsm.ECP256
	case "SignPS256":
		return hsm.RSA2048
	}
	return hsm.AES256
}

// jwtSigningInput returns a JWS signing input shaped like the ones sigild
// makes for ES256: a header with alg, a 43-character kid and typ, and the
// claims of jwtClaims.
func jwtSigningInput() string {
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": "sigil-bench-kid-0123456789abcdefghijklmnopq", "typ": "JWT"})
	claims, _ := json.Marshal(jwtClaims(time.Now()))
	b64 := base64.RawURLEncoding
	return b64.EncodeToString(hdr) + "." + b64.EncodeToString(claims)
}

// newRawBench opens the token, generates a key for cfg.rpc in it and
// returns the operation that calls the HSM with it. Cleanup destroys the
// key and closes the token.
func newRawBench(ctx context.Context, cfg config) (bench, error) {
	pin, err := readSecret(cfg.hsmPINFile, "PIN")
	if err != nil {
		return bench{}, err
	}
	be, err := pkcs11.Open(ctx, pkcs11.Config{Module: cfg.hsmModule, TokenLabel: cfg.hsmLabel, PIN: pin, MaxSessions: cfg.hsmSessions})
	if err != nil {
		return bench{}, fmt.Errorf("open token: %w", err)
	}
	id := randomBytes(hsm.IDSize)
	pub, err := be.GenerateKey(ctx, hsm.KeySpec{ID: id, Label: fmt.Sprintf("sigil:bench:%x", id[:4]), Type: rawKeyType(cfg.rpc)})
	if err != nil {
		_ = be.Close()
		return bench{}, fmt.Errorf("generate key: %w", err)
	}
	r := &rawBench{be: be, id: id, pub: pub}
	b := bench{cleanup: r.close, verify: func(context.Context) error { return nil }}
	switch cfg.rpc {
	case "Encrypt1K":
		r.plaintext = randomBytes(plaintextSize)
		b.op, b.verify = r.seal, r.verifySealed
	case "Decrypt1K":
		r.plaintext, r.nonce = randomBytes(plaintextSize), randomBytes(hsm.NonceSize)
		r.ciphertext, err = be.Seal(ctx, id, r.nonce, r.plaintext, aad)
		b.op = r.open
	case "GenerateDataKey":
		b.op, b.verify = r.generateDataKey, r.verifySealed
	case "SignES256":
		r.input, r.mech = digest, hsm.ECDSA
		b.op, b.verify = r.sign, r.verifySignatures
	case "SignPS256":
		r.input, r.mech = digest, hsm.RSAPSSSHA256
		b.op, b.verify = r.sign, r.verifySignatures
	case "SignJWTES256":
		r.signingInput, r.mech = []byte(jwtSigningInput()), hsm.ECDSA
		b.op, b.verify = r.signJWT, r.verifySignatures
	}
	if err != nil {
		r.close()
		return bench{}, err
	}
	return b, nil
}

// rawSealed is a kept AES-GCM ciphertext with its nonce and plaintext.
type rawSealed struct{ nonce, plaintext, ciphertext []byte }

// rawSig is a kept signature and the digest it signs.
type rawSig struct{ digest, sig []byte }

// rawBench holds what the raw operations share.
type rawBench struct {
	be  *pkcs11.Backend
	id  []byte
	pub crypto.PublicKey

	plaintext, nonce, ciphertext []byte
	input, signingInput          []byte
	mech                         hsm.Mechanism

	sealed     sampler[rawSealed]
	signatures sampler[rawSig]
}

// close destroys the key and closes the token.
func (r *rawBench) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.be.Destroy(ctx, r.id); err != nil {
		fmt.Fprintf(os.Stderr, "sigil-bench: destroy raw key: %v\n", err)
	}
	_ = r.be.Close()
}

func (r *rawBench) seal(ctx context.Context, _, seq int) error {
	nonce := randomBytes(hsm.NonceSize)
	ct, err := r.be.Seal(ctx, r.id, nonce, r.plaintext, aad)
	if err != nil {
		return err
	}
	if len(ct) != plaintextSize+hsm.TagSize {
		return checkFailed("sealed %d bytes", len(ct))
	}
	if r.sealed.want(seq) {
		r.sealed.add(rawSealed{nonce, r.plaintext, ct})
	}
	return nil
}

func (r *rawBench) open(ctx context.Context, _, _ int) error {
	pt, err := r.be.Open(ctx, r.id, r.nonce, r.ciphertext, aad)
	if err != nil {
		return err
	}
	if !bytes.Equal(pt, r.plaintext) {
		return checkFailed("opened plaintext differs")
	}
	return nil
}

func (r *rawBench) generateDataKey(ctx context.Context, _, seq int) error {
	dk, err := r.be.Random(ctx, dataKeySize)
	if err != nil {
		return err
	}
	nonce := randomBytes(hsm.NonceSize)
	ct, err := r.be.Seal(ctx, r.id, nonce, dk, aad)
	if err != nil {
		return err
	}
	if len(dk) != dataKeySize || len(ct) != dataKeySize+hsm.TagSize {
		return checkFailed("data key of %d bytes, wrapped in %d", len(dk), len(ct))
	}
	if r.sealed.want(seq) {
		r.sealed.add(rawSealed{nonce, dk, ct})
	}
	return nil
}

func (r *rawBench) sign(ctx context.Context, _, seq int) error {
	return r.signDigest(ctx, r.input, seq)
}

func (r *rawBench) signJWT(ctx context.Context, _, seq int) error {
	d := sha256.Sum256(r.signingInput)
	return r.signDigest(ctx, d[:], seq)
}

// signDigest signs d and checks the signature's length.
func (r *rawBench) signDigest(ctx context.Context, d []byte, seq int) error {
	sig, err := r.be.Sign(ctx, r.id, d, r.mech)
	if err != nil {
		return err
	}
	want := p256SigSize
	if r.mech == hsm.RSAPSSSHA256 {
		want = rsa2048Size
	}
	if len(sig) != want {
		return checkFailed("signature of %d bytes, want %d", len(sig), want)
	}
	if r.signatures.want(seq) {
		r.signatures.add(rawSig{d, sig})
	}
	return nil
}

// verifySealed opens the kept ciphertexts.
func (r *rawBench) verifySealed(ctx context.Context) error {
	for _, x := range r.sealed.all() {
		pt, err := r.be.Open(ctx, r.id, x.nonce, x.ciphertext, aad)
		if err != nil {
			return fmt.Errorf("open a kept ciphertext: %w", err)
		}
		if !bytes.Equal(pt, x.plaintext) {
			return checkFailed("a kept ciphertext opens to another plaintext")
		}
	}
	return nil
}

// verifySignatures verifies the kept signatures (raw r||s for ECDSA).
func (r *rawBench) verifySignatures(context.Context) error {
	for _, x := range r.signatures.all() {
		if err := verifySignature(r.pub, x.digest, x.sig, false); err != nil {
			return err
		}
	}
	return nil
}
