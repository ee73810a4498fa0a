package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
)

// durationFlag is an optional duration flag: nil until set.
type durationFlag struct{ d *durationpb.Duration }

func (f *durationFlag) String() string { return "" }

func (f *durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	f.d = durationpb.New(d)
	return nil
}

func updateKey(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("update-key", flag.ContinueOnError)
	var rotation, destroy, lead durationFlag
	fs.Var(&rotation, "rotation-period", "rotate on this schedule (0 stops it), e.g. 720h")
	fs.Var(&destroy, "destroy-delay", "wait before destroying a scheduled version, e.g. 720h")
	fs.Var(&lead, "publish-lead", "publish a new signing version this long before it signs, e.g. 10m")
	next := fs.String("next-rotation", "", "next scheduled rotation, RFC 3339")
	pos, err := parse(fs, c, args, 1, "one key name")
	if err != nil {
		return err
	}
	req := &sigilv1.UpdateKeyRequest{Name: pos[0], RotationPeriod: rotation.d, DestroyDelay: destroy.d, PublishLead: lead.d}
	if *next != "" {
		t, err := time.Parse(time.RFC3339, *next)
		if err != nil {
			return fmt.Errorf("--next-rotation: %w", err)
		}
		req.NextRotationTime = timestamppb.New(t)
	}
	res, err := c.client.UpdateKey(ctx, req)
	if err != nil {
		return err
	}
	return printJSON(c, res.GetKey())
}

// versionCommand returns a command that changes one version's state.
func versionCommand(name string, call func(ctx context.Context, c *cli, key string, v uint32) (*sigilv1.KeyVersion, error)) command {
	return func(ctx context.Context, c *cli, args []string) error {
		pos, err := parse(flag.NewFlagSet(name, flag.ContinueOnError), c, args, 2, "a key name and a version")
		if err != nil {
			return err
		}
		v, err := strconv.ParseUint(pos[1], 10, 32)
		if err != nil || v == 0 {
			return fmt.Errorf("%s: version must be a positive number", name)
		}
		kv, err := call(ctx, c, pos[0], uint32(v))
		if err != nil {
			return err
		}
		return printJSON(c, kv)
	}
}

var (
	enableVersion = versionCommand("enable-version", func(ctx context.Context, c *cli, key string, v uint32) (*sigilv1.KeyVersion, error) {
		res, err := c.client.EnableKeyVersion(ctx, &sigilv1.EnableKeyVersionRequest{Name: key, Version: v})
		return res.GetKeyVersion(), err
	})
	disableVersion = versionCommand("disable-version", func(ctx context.Context, c *cli, key string, v uint32) (*sigilv1.KeyVersion, error) {
		res, err := c.client.DisableKeyVersion(ctx, &sigilv1.DisableKeyVersionRequest{Name: key, Version: v})
		return res.GetKeyVersion(), err
	})
	destroyVersion = versionCommand("destroy-version", func(ctx context.Context, c *cli, key string, v uint32) (*sigilv1.KeyVersion, error) {
		res, err := c.client.ScheduleKeyVersionDestruction(ctx, &sigilv1.ScheduleKeyVersionDestructionRequest{Name: key, Version: v})
		return res.GetKeyVersion(), err
	})
	restoreVersion = versionCommand("restore-version", func(ctx context.Context, c *cli, key string, v uint32) (*sigilv1.KeyVersion, error) {
		res, err := c.client.RestoreKeyVersion(ctx, &sigilv1.RestoreKeyVersionRequest{Name: key, Version: v})
		return res.GetKeyVersion(), err
	})
)

func generateDataKey(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("generate-data-key", flag.ContinueOnError)
	aad := fs.String("aad", "", "associated data (text)")
	noPlain := fs.Bool("without-plaintext", false, "print only the encrypted data key")
	pos, err := parse(fs, c, args, 1, "one key name")
	if err != nil {
		return err
	}
	res, err := c.client.GenerateDataKey(ctx, &sigilv1.GenerateDataKeyRequest{Name: pos[0], AssociatedData: []byte(*aad), WithoutPlaintext: *noPlain})
	if err != nil {
		return err
	}
	b64 := base64.StdEncoding.EncodeToString
	if !*noPlain {
		fmt.Fprintf(c.stdout, "plaintext %s\n", b64(res.GetPlaintext()))
	}
	_, err = fmt.Fprintf(c.stdout, "ciphertext %s\nversion %d\n", b64(res.GetCiphertext()), res.GetKeyVersion())
	return err
}

func reEncrypt(ctx context.Context, c *cli, args []string) error {
	var f ioFlags
	fs := flag.NewFlagSet("re-encrypt", flag.ContinueOnError)
	f.register(fs)
	dest := fs.String("to", "", "destination key (default the same key)")
	pos, err := parse(fs, c, args, 1, "one key name")
	if err != nil {
		return err
	}
	ct, err := f.read(c)
	if err != nil {
		return err
	}
	if f.base64 {
		if ct, err = base64.StdEncoding.DecodeString(string(trimSpace(ct))); err != nil {
			return fmt.Errorf("input is not base64: %w", err)
		}
	}
	res, err := c.client.ReEncrypt(ctx, &sigilv1.ReEncryptRequest{Name: pos[0], Ciphertext: ct, AssociatedData: []byte(f.aad), DestinationName: *dest})
	if err != nil {
		return err
	}
	out := res.GetCiphertext()
	if f.base64 {
		out = []byte(base64.StdEncoding.EncodeToString(out) + "\n")
	}
	return f.write(c, out)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
