package main

import (
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
	"github.com/sigil-kms/sigil/softhsm"
)

// TestGrpcurl lists the API through server reflection with grpcurl, as an
// operator would, and calls health and an RPC with it. The test command
// builds grpcurl from tools/go.mod.
func TestGrpcurl(t *testing.T) {
	bin, err := exec.LookPath("grpcurl")
	if err != nil {
		if os.Getenv(softhsm.RequireEnv) == "1" {
			t.Fatal("grpcurl is not on PATH (the test command builds it from tools/go.mod)")
		}
		t.Skip("grpcurl is not on PATH")
	}
	p := startSigild(t, softhsm.NewToken(t), postgrestest.NewDatabase(t))
	u, err := url.Parse(p.url)
	if err != nil {
		t.Fatal(err)
	}
	// grpcurl wants its flags, then the address, then the verb or method
	// and its symbol.
	grpcurl := func(flags []string, rest ...string) string {
		t.Helper()
		args := append(append(append([]string{"-plaintext"}, flags...), u.Host), rest...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := grpcurl(nil, "list"); !strings.Contains(out, "sigil.v1.KeyManagementService") || !strings.Contains(out, "grpc.health.v1.Health") {
		t.Errorf("grpcurl list:\n%s", out)
	}
	if out := grpcurl(nil, "describe", "sigil.v1.KeyManagementService"); !strings.Contains(out, "rpc Encrypt") {
		t.Errorf("grpcurl describe:\n%s", out)
	}
	if out := grpcurl(nil, "grpc.health.v1.Health/Check"); !strings.Contains(out, `"SERVING"`) {
		t.Errorf("health check:\n%s", out)
	}
	out := grpcurl([]string{"-d", `{"name":"via-grpcurl","algorithm":"ALGORITHM_AES_256_GCM"}`}, "sigil.v1.KeyManagementService/CreateKey")
	if !strings.Contains(out, `"name": "via-grpcurl"`) {
		t.Errorf("CreateKey through grpcurl:\n%s", out)
	}
}
