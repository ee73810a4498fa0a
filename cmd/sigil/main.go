// Command sigil is the command-line client of a Sigil server.
//
//	sigil [--addr URL] COMMAND [flags] [args]
//
// Commands: create-key, get-key, list-keys, rotate-key, list-versions,
// encrypt, decrypt, sign, verify, public-key, sign-jwt, verify-jwt,
// update-key, enable-version, disable-version, destroy-version,
// restore-version, generate-data-key, re-encrypt, audit verify. Metadata is printed as JSON; encrypt and decrypt read
// and write files, or stdin and stdout when a path is "-" or not given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
)

const usage = `usage: sigil [--addr URL] [--token-file F] [--ca-file F] [--cert F --key F] COMMAND [flags] [args]

Commands:
  create-key [--algorithm AES_256_GCM|EC_P256_SHA256|...] [--label k=v]... [--rotation-period D] [--destroy-delay D] [--publish-lead D] NAME
  get-key NAME
  list-keys [--page-size N]
  rotate-key [--immediate] NAME
  update-key [--rotation-period D] [--next-rotation T] [--destroy-delay D] [--publish-lead D] NAME
  enable-version | disable-version | destroy-version | restore-version NAME VERSION
  list-versions NAME
  encrypt [--in FILE] [--out FILE] [--aad TEXT] [--base64] NAME
  decrypt [--in FILE] [--out FILE] [--aad TEXT] [--base64] NAME
  sign [--in FILE] [--digest] [--version N] [--raw] [--out FILE] NAME
  verify (--signature B64 | --signature-file FILE) [--in FILE] [--digest] [--version N] [--raw] NAME
  public-key [--version N] [--jwk] NAME
  sign-jwt [--claims JSON] [--typ T] [--cty C] NAME      (claims from stdin if not given)
  verify-jwt [--jwks URL] TOKEN                          (checks against the JWKS only)
  generate-data-key [--aad TEXT] [--without-plaintext] NAME
  re-encrypt [--in FILE] [--out FILE] [--aad TEXT] [--base64] [--to KEY] NAME
  audit verify [--database-url URL]                     (checks the audit log's hash chain in Postgres;
                                                         URL from $SIGIL_DATABASE_URL if not given)

The server address defaults to $SIGIL_ADDR or http://127.0.0.1:8380.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	env := cli{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(env.run(ctx, os.Args[1:]))
}

// cli holds the command's I/O so that tests can drive it.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	client         sigilv1connect.KeyManagementServiceClient
	addr           string
}

type command func(ctx context.Context, c *cli, args []string) error

var commands = map[string]command{
	"create-key":        createKey,
	"get-key":           getKey,
	"list-keys":         listKeys,
	"rotate-key":        rotateKey,
	"list-versions":     listVersions,
	"encrypt":           encrypt,
	"decrypt":           decrypt,
	"sign":              sign,
	"verify":            verify,
	"public-key":        publicKey,
	"sign-jwt":          signJWT,
	"verify-jwt":        verifyJWT,
	"update-key":        updateKey,
	"enable-version":    enableVersion,
	"disable-version":   disableVersion,
	"destroy-version":   destroyVersion,
	"restore-version":   restoreVersion,
	"generate-data-key": generateDataKey,
	"re-encrypt":        reEncrypt,
	"audit":             auditCmd,
}

// run executes one command and returns the process exit code.
func (c *cli) run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("sigil", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() { fmt.Fprint(c.stderr, usage) }
	addr := c.getenv("SIGIL_ADDR")
	if addr == "" {
		addr = "http://127.0.0.1:8380"
	}
	fs.StringVar(&addr, "addr", addr, "server URL")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline for the call")
	cr := credentials{tokenFile: c.getenv("SIGIL_TOKEN_FILE")}
	fs.StringVar(&cr.tokenFile, "token-file", cr.tokenFile, "file holding a bearer token (env SIGIL_TOKEN_FILE); never the token itself")
	fs.StringVar(&cr.caFile, "ca-file", "", "PEM CA bundle that signs the server's certificate")
	fs.StringVar(&cr.certFile, "cert", "", "client certificate (PEM) for mTLS")
	fs.StringVar(&cr.keyFile, "key", "", "client certificate's private key (PEM)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	cmd, ok := commands[fs.Arg(0)]
	if !ok {
		fmt.Fprintf(c.stderr, "sigil: unknown command %q\n\n%s", fs.Arg(0), usage)
		return 2
	}
	c.addr = strings.TrimRight(addr, "/")
	if c.client == nil {
		hc, err := cr.httpClient(c.addr)
		if err != nil {
			fmt.Fprintf(c.stderr, "sigil: %v\n", err)
			return 2
		}
		c.client = sigilv1connect.NewKeyManagementServiceClient(hc, c.addr)
	}
	// The default deadline is for one RPC; audit verify reads the whole log
	// and gets a deadline only from an explicit --timeout.
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "timeout" })
	if fs.Arg(0) != "audit" || explicit {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	if err := cmd(ctx, c, fs.Args()[1:]); err != nil {
		var cerr *connect.Error
		if errors.As(err, &cerr) {
			fmt.Fprintf(c.stderr, "sigil: %s: %s\n", cerr.Code(), cerr.Message())
			return 1
		}
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		if errors.Is(err, errInvalidSignature) || errors.Is(err, errAuditBroken) {
			return 1
		}
		fmt.Fprintf(c.stderr, "sigil: %v\n", err)
		return 1
	}
	return 0
}
