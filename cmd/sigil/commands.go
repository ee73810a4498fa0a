package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
)

// parse parses a command's flags and requires exactly want positional
// arguments.
func parse(fs *flag.FlagSet, c *cli, args []string, want int, names string) ([]string, error) {
	fs.SetOutput(c.stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != want {
		return nil, fmt.Errorf("%s takes %s", fs.Name(), names)
	}
	return fs.Args(), nil
}

func printJSON(c *cli, m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	// protojson varies its spacing on purpose; indent it one stable way.
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = c.stdout.Write(out.Bytes())
	return err
}

// labelFlags collects repeated --label k=v flags.
type labelFlags map[string]string

func (l labelFlags) String() string { return "" }

func (l labelFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return errors.New("want key=value")
	}
	l[k] = v
	return nil
}

func createKey(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("create-key", flag.ContinueOnError)
	alg := fs.String("algorithm", "AES_256_GCM", "key algorithm")
	labels := labelFlags{}
	fs.Var(labels, "label", "label key=value (repeatable)")
	var rotation, destroy, lead durationFlag
	fs.Var(&rotation, "rotation-period", "rotate on this schedule, e.g. 720h")
	fs.Var(&destroy, "destroy-delay", "wait before destroying a scheduled version (default 720h)")
	fs.Var(&lead, "publish-lead", "publish a new signing version this long before it signs (default 10m)")
	pos, err := parse(fs, c, args, 1, "one key name")
	if err != nil {
		return err
	}
	v, ok := sigilv1.Algorithm_value["ALGORITHM_"+strings.ToUpper(*alg)]
	if !ok {
		return fmt.Errorf("unknown algorithm %q", *alg)
	}
	res, err := c.client.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: pos[0], Algorithm: sigilv1.Algorithm(v), Labels: labels,
		RotationPeriod: rotation.d, DestroyDelay: destroy.d, PublishLead: lead.d})
	if err != nil {
		return err
	}
	return printJSON(c, res.GetKey())
}

func getKey(ctx context.Context, c *cli, args []string) error {
	pos, err := parse(flag.NewFlagSet("get-key", flag.ContinueOnError), c, args, 1, "one key name")
	if err != nil {
		return err
	}
	res, err := c.client.GetKey(ctx, &sigilv1.GetKeyRequest{Name: pos[0]})
	if err != nil {
		return err
	}
	return printJSON(c, res.GetKey())
}

func listKeys(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("list-keys", flag.ContinueOnError)
	size := fs.Int("page-size", 100, "keys per request")
	if _, err := parse(fs, c, args, 0, "no arguments"); err != nil {
		return err
	}
	all := &sigilv1.ListKeysResponse{}
	req := &sigilv1.ListKeysRequest{PageSize: int32(*size)}
	for {
		res, err := c.client.ListKeys(ctx, req)
		if err != nil {
			return err
		}
		all.Keys = append(all.Keys, res.GetKeys()...)
		if res.GetNextPageToken() == "" {
			return printJSON(c, all)
		}
		req.PageToken = res.GetNextPageToken()
	}
}

func rotateKey(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("rotate-key", flag.ContinueOnError)
	immediate := fs.Bool("immediate", false, "make a new signing version primary at once, skipping the publish lead")
	pos, err := parse(fs, c, args, 1, "one key name")
	if err != nil {
		return err
	}
	res, err := c.client.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: pos[0], Immediate: *immediate})
	if err != nil {
		return err
	}
	return printJSON(c, res.GetKeyVersion())
}

func listVersions(ctx context.Context, c *cli, args []string) error {
	pos, err := parse(flag.NewFlagSet("list-versions", flag.ContinueOnError), c, args, 1, "one key name")
	if err != nil {
		return err
	}
	all := &sigilv1.ListKeyVersionsResponse{}
	req := &sigilv1.ListKeyVersionsRequest{Name: pos[0]}
	for {
		res, err := c.client.ListKeyVersions(ctx, req)
		if err != nil {
			return err
		}
		all.KeyVersions = append(all.KeyVersions, res.GetKeyVersions()...)
		if res.GetNextPageToken() == "" {
			return printJSON(c, all)
		}
		req.PageToken = res.GetNextPageToken()
	}
}

// ioFlags are the flags shared by encrypt and decrypt.
type ioFlags struct {
	in, out, aad string
	base64       bool
}

func (f *ioFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.in, "in", "-", "input file, - for stdin")
	fs.StringVar(&f.out, "out", "-", "output file, - for stdout")
	fs.StringVar(&f.aad, "aad", "", "associated data (text)")
	fs.BoolVar(&f.base64, "base64", false, "ciphertext is base64 text instead of raw bytes")
}

func (f *ioFlags) read(c *cli) ([]byte, error) {
	if f.in == "-" {
		return io.ReadAll(c.stdin)
	}
	return os.ReadFile(f.in)
}

func (f *ioFlags) write(c *cli, b []byte) error {
	if f.out == "-" {
		_, err := c.stdout.Write(b)
		return err
	}
	return os.WriteFile(f.out, b, 0o600)
}

func encrypt(ctx context.Context, c *cli, args []string) error {
	var f ioFlags
	fs := flag.NewFlagSet("encrypt", flag.ContinueOnError)
	f.register(fs)
	pos, err := parse(fs, c, args, 1, "one key name")
	if err != nil {
		return err
	}
	pt, err := f.read(c)
	if err != nil {
		return err
	}
	res, err := c.client.Encrypt(ctx, &sigilv1.EncryptRequest{Name: pos[0], Plaintext: pt, AssociatedData: []byte(f.aad)})
	if err != nil {
		return err
	}
	out := res.GetCiphertext()
	if f.base64 {
		out = []byte(base64.StdEncoding.EncodeToString(out) + "\n")
	}
	return f.write(c, out)
}

func decrypt(ctx context.Context, c *cli, args []string) error {
	var f ioFlags
	fs := flag.NewFlagSet("decrypt", flag.ContinueOnError)
	f.register(fs)
	pos, err := parse(fs, c, args, 1, "one key name")
	if err != nil {
		return err
	}
	ct, err := f.read(c)
	if err != nil {
		return err
	}
	if f.base64 {
		if ct, err = base64.StdEncoding.DecodeString(strings.TrimSpace(string(ct))); err != nil {
			return fmt.Errorf("input is not base64: %w", err)
		}
	}
	res, err := c.client.Decrypt(ctx, &sigilv1.DecryptRequest{Name: pos[0], Ciphertext: ct, AssociatedData: []byte(f.aad)})
	if err != nil {
		return err
	}
	return f.write(c, res.GetPlaintext())
}
