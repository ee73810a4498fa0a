package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/softhsm"
)

// childEnv makes the test binary act as sigild, so that tests can start
// real server processes without a separate build.
const childEnv = "SIGIL_TEST_AS_SIGILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	softhsm.Main(m)
}

// process is a sigild running as a child process.
type process struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, set before done closes

	mu     sync.Mutex
	stderr bytes.Buffer
	// lines receives a value (without blocking) when stderr grows.
	lines chan struct{}
}

// wait waits for the process to exit and returns its exit status.
func (p *process) wait() error {
	<-p.done
	return p.err
}

// output returns what the process wrote to stderr so far.
func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// count returns how many lines of the process's stderr contain s.
func (p *process) count(s string) int {
	n := 0
	for _, line := range strings.Split(p.output(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// waitOutput waits until the process writes more output, or until the
// deadline.
func (p *process) waitOutput(deadline time.Time) {
	select {
	case <-p.lines:
	case <-time.After(time.Until(deadline)):
	}
}

// exitSignal returns the signal that ended a process, from its Wait error.
func exitSignal(err error) (syscall.Signal, bool) {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0, false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}

var listening = regexp.MustCompile(`sigild: listening on (https?://\S+)`)

// startSigild starts sigild on a free loopback port with the token and
// database, and waits until it says where it listens.
func startSigild(t *testing.T, tok *softhsm.Token, dbURL string, extra ...string) *process {
	t.Helper()
	return startSigildEnv(t, tok, dbURL, nil, extra...)
}

// startSigildEnv is startSigild with extra environment variables.
func startSigildEnv(t *testing.T, tok *softhsm.Token, dbURL string, env []string, extra ...string) *process {
	t.Helper()
	return launch(t, tok, append([]string{"--dev"}, baseArgs(tok, dbURL, extra...)...), env, nil)
}

// baseArgs are the flags naming a free loopback port, the database and the
// token, followed by extra.
func baseArgs(tok *softhsm.Token, dbURL string, extra ...string) []string {
	return append([]string{"--listen", "127.0.0.1:0", "--database-url", dbURL,
		"--hsm-module", tok.Module, "--hsm-token-label", tok.Label, "--hsm-pin-file", tok.PINFile}, extra...)
}

// launch starts the test binary as sigild with args, the token's SoftHSM
// configuration and env, sends its stdout to stdout (if not nil), and waits
// until it says where it listens.
func launch(t *testing.T, tok *softhsm.Token, args, env []string, stdout io.Writer) *process {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), childEnv+"=1", "SOFTHSM2_CONF="+tok.Conf), env...)
	cmd.Stdout = stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), lines: make(chan struct{}, 1)}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- struct{}{}:
			default:
			}
			if m := listening.FindStringSubmatch(line); m != nil {
				found <- m[1]
			}
		}
		close(found)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = p.wait()
	})
	select {
	case u, ok := <-found:
		if !ok {
			t.Fatalf("sigild exited before listening:\n%s", p.output())
		}
		p.url = u
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		_ = p.wait()
		t.Fatalf("sigild did not start within 60s:\n%s", p.output())
	}
	return p
}

func (p *process) client() sigilv1connect.KeyManagementServiceClient {
	return sigilv1connect.NewKeyManagementServiceClient(http.DefaultClient, p.url)
}

// TestRestartKeepsEverything encrypts under several versions, kills sigild
// with SIGKILL, starts a new process on the same token and database, and
// decrypts everything.
func TestRestartKeepsEverything(t *testing.T) {
	ctx := context.Background()
	tok := softhsm.NewToken(t)
	db := postgrestest.NewDatabase(t)

	p1 := startSigild(t, tok, db)
	c := p1.client()
	if _, err := c.CreateKey(ctx, &sigilv1.CreateKeyRequest{Name: "k", Algorithm: sigilv1.Algorithm_ALGORITHM_AES_256_GCM}); err != nil {
		t.Fatal(err)
	}
	var cts [][]byte
	for i := 0; i < 3; i++ {
		res, err := c.Encrypt(ctx, &sigilv1.EncryptRequest{Name: "k", Plaintext: []byte(fmt.Sprint("message ", i)), AssociatedData: []byte("ad")})
		if err != nil {
			t.Fatal(err)
		}
		cts = append(cts, res.GetCiphertext())
		if _, err := c.RotateKey(ctx, &sigilv1.RotateKeyRequest{Name: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p1.wait()

	p2 := startSigild(t, tok, db)
	c = p2.client()
	for i, ct := range cts {
		res, err := c.Decrypt(ctx, &sigilv1.DecryptRequest{Name: "k", Ciphertext: ct, AssociatedData: []byte("ad")})
		if err != nil {
			t.Fatalf("after restart, decrypt %d: %v", i, err)
		}
		if got, want := string(res.GetPlaintext()), fmt.Sprint("message ", i); got != want || res.GetKeyVersion() != uint32(i+1) {
			t.Fatalf("after restart, decrypt %d = %q v%d", i, got, res.GetKeyVersion())
		}
	}
	k, err := c.GetKey(ctx, &sigilv1.GetKeyRequest{Name: "k"})
	if err != nil || k.GetKey().GetPrimaryVersion() != 4 {
		t.Fatalf("GetKey after restart = %v, %v", k, err)
	}

	// Every object the service created, read back through PKCS#11 from
	// this process.
	objs := tok.Objects(t)
	if len(objs) != 4 {
		t.Fatalf("token holds %d objects, want 4", len(objs))
	}
	for _, o := range objs {
		if !o.Sensitive || o.Extractable || !o.NeverExtractable || !o.AlwaysSensitive || !o.Token || !o.Private {
			t.Errorf("object %q has weak attributes: %+v", o.Label, o)
		}
		if !strings.HasPrefix(o.Label, "sigil:"+k.GetKey().GetId()+":v") {
			t.Errorf("object label %q", o.Label)
		}
	}

	// SIGTERM shuts down cleanly.
	if err := p2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p2.wait(); err != nil {
		t.Fatalf("sigild exit after SIGTERM: %v\n%s", err, p2.output())
	}
}

func TestHealthEndpoints(t *testing.T) {
	tok := softhsm.NewToken(t)
	p := startSigild(t, tok, postgrestest.NewDatabase(t))
	for _, path := range []string{"/healthz", "/readyz"} {
		res, err := http.Get(p.url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s = %d %s", path, res.StatusCode, body)
		}
	}
}

// TestStartupRefusals checks that sigild refuses bad configurations with a
// clear message and never prints the PIN.
func TestStartupRefusals(t *testing.T) {
	tok := softhsm.NewToken(t)
	db := postgrestest.NewDatabase(t)
	pin, err := os.ReadFile(tok.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	wrongPIN := t.TempDir() + "/wrong"
	if err := os.WriteFile(wrongPIN, []byte("000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := func() []string { return append([]string{"--dev"}, baseArgs(tok, db)...) }
	with := func(flag, value string) []string {
		a := base()
		for i := range a {
			if a[i] == flag {
				a[i+1] = value
			}
		}
		return a
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no dev", base()[1:], "--policy-file (SIGIL_POLICY_FILE) is required"},
		{"dev on a public address", with("--listen", "0.0.0.0:0"), "non-loopback"},
		{"wrong PIN", with("--hsm-pin-file", wrongPIN), "incorrect PIN"},
		{"unknown token", with("--hsm-token-label", "no-such-token"), "no-such-token"},
		{"missing module", with("--hsm-module", "/nonexistent/libpkcs11.so"), "/nonexistent/libpkcs11.so"},
		{"missing PIN file", with("--hsm-pin-file", "/nonexistent/pin"), "PIN file"},
		{"bad database", with("--database-url", "postgres://127.0.0.1:1/x?sslmode=disable&connect_timeout=2"), "database"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], tc.args...)
			cmd.Env = append(os.Environ(), childEnv+"=1", "SOFTHSM2_CONF="+tok.Conf)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("sigild started; output:\n%s", out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output does not mention %q:\n%s", tc.want, out)
			}
			if bytes.Contains(out, bytes.TrimSpace(pin)) {
				t.Fatal("output contains the PIN")
			}
		})
	}
}
