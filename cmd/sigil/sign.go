package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sigil-kms/sigil/client"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
)

// signFlags are the flags shared by sign and verify.
type signFlags struct {
	in      string
	digest  bool
	version uint
	raw     bool
}

func (f *signFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.in, "in", "-", "message (or digest) file, - for stdin")
	fs.BoolVar(&f.digest, "digest", false, "the input is a binary digest, not a message")
	fs.UintVar(&f.version, "version", 0, "key version (default the primary)")
	fs.BoolVar(&f.raw, "raw", false, "ECDSA signature as raw r||s (JOSE) instead of DER")
}

func (f *signFlags) encoding() sigilv1.SignatureEncoding {
	if f.raw {
		return sigilv1.SignatureEncoding_SIGNATURE_ENCODING_RAW
	}
	return sigilv1.SignatureEncoding_SIGNATURE_ENCODING_UNSPECIFIED
}

func (f *signFlags) read(c *cli) ([]byte, error) {
	return (&ioFlags{in: f.in}).read(c)
}

func sign(ctx context.Context, c *cli, args []string) error {
	var f signFlags
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	f.register(fs)
	out := fs.String("out", "", "write the raw signature to this file instead of base64 to stdout")
	pos, err := parse(fs, c, args, 1, "one key name")
	if err != nil {
		return err
	}
	data, err := f.read(c)
	if err != nil {
		return err
	}
	req := &sigilv1.SignRequest{Name: pos[0], Version: uint32(f.version), Encoding: f.encoding()}
	if f.digest {
		req.Input = &sigilv1.SignRequest_Digest{Digest: data}
	} else {
		req.Input = &sigilv1.SignRequest_Message{Message: data}
	}
	res, err := c.client.Sign(ctx, req)
	if err != nil {
		return err
	}
	if *out != "" {
		return os.WriteFile(*out, res.GetSignature(), 0o600)
	}
	_, err = fmt.Fprintln(c.stdout, base64.StdEncoding.EncodeToString(res.GetSignature()))
	return err
}

// errInvalidSignature makes verify exit 1 after printing "invalid".
var errInvalidSignature = errors.New("signature is not valid")

func verify(ctx context.Context, c *cli, args []string) error {
	var f signFlags
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	f.register(fs)
	sigB64 := fs.String("signature", "", "the signature, base64")
	sigFile := fs.String("signature-file", "", "file holding the raw signature")
	pos, err := parse(fs, c, args, 1, "one key name")
	if err != nil {
		return err
	}
	var sig []byte
	switch {
	case *sigFile != "" && *sigB64 == "":
		if sig, err = os.ReadFile(*sigFile); err != nil {
			return err
		}
	case *sigB64 != "" && *sigFile == "":
		if sig, err = base64.StdEncoding.DecodeString(strings.TrimSpace(*sigB64)); err != nil {
			return fmt.Errorf("--signature is not base64: %w", err)
		}
	default:
		return errors.New("verify takes one of --signature or --signature-file")
	}
	data, err := f.read(c)
	if err != nil {
		return err
	}
	req := &sigilv1.VerifyRequest{Name: pos[0], Version: uint32(f.version), Signature: sig, Encoding: f.encoding()}
	if f.digest {
		req.Input = &sigilv1.VerifyRequest_Digest{Digest: data}
	} else {
		req.Input = &sigilv1.VerifyRequest_Message{Message: data}
	}
	res, err := c.client.Verify(ctx, req)
	if err != nil {
		return err
	}
	if !res.GetValid() {
		fmt.Fprintln(c.stdout, "invalid")
		return errInvalidSignature
	}
	_, err = fmt.Fprintf(c.stdout, "valid (version %d)\n", res.GetKeyVersion())
	return err
}

func publicKey(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("public-key", flag.ContinueOnError)
	version := fs.Uint("version", 0, "key version (default the primary)")
	asJWK := fs.Bool("jwk", false, "print the JWK instead of PEM")
	pos, err := parse(fs, c, args, 1, "one key name")
	if err != nil {
		return err
	}
	res, err := c.client.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Name: pos[0], Version: uint32(*version)})
	if err != nil {
		return err
	}
	if *asJWK {
		_, err = fmt.Fprintln(c.stdout, res.GetJwk())
	} else {
		_, err = fmt.Fprint(c.stdout, res.GetPem())
	}
	return err
}

func signJWT(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("sign-jwt", flag.ContinueOnError)
	claims := fs.String("claims", "", "claims as a JSON object (default: read from stdin)")
	typ := fs.String("typ", "", `"typ" header (default JWT)`)
	cty := fs.String("cty", "", `"cty" header`)
	pos, err := parse(fs, c, args, 1, "one key name")
	if err != nil {
		return err
	}
	text := []byte(*claims)
	if *claims == "" {
		if text, err = (&ioFlags{in: "-"}).read(c); err != nil {
			return err
		}
	}
	st := &structpb.Struct{}
	if err := protojson.Unmarshal(text, st); err != nil {
		return fmt.Errorf("claims must be a JSON object: %w", err)
	}
	headers := map[string]string{}
	if *typ != "" {
		headers["typ"] = *typ
	}
	if *cty != "" {
		headers["cty"] = *cty
	}
	res, err := c.client.SignJWT(ctx, &sigilv1.SignJWTRequest{Name: pos[0], Claims: st, Headers: headers})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.stdout, res.GetToken())
	return err
}

func verifyJWT(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("verify-jwt", flag.ContinueOnError)
	jwksURL := fs.String("jwks", "", "JWKS URL (default: the server's /.well-known/jwks.json)")
	pos, err := parse(fs, c, args, 1, "one token")
	if err != nil {
		return err
	}
	url := *jwksURL
	if url == "" {
		url = c.addr + "/.well-known/jwks.json"
	}
	v, err := client.NewVerifier(ctx, url, nil)
	if err != nil {
		return err
	}
	tok, err := v.Verify(ctx, strings.TrimSpace(pos[0]))
	if err != nil {
		fmt.Fprintln(c.stdout, "invalid")
		return err
	}
	claims, err := json.Marshal(tok)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "valid %s\n", claims)
	return err
}
