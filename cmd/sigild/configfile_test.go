package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/server"
)

// writeConfig writes a config file and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sigild.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// envOf returns a getenv looking up m.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestConfigPrecedence sets settings of each type from every source and
// checks that a flag wins over the environment, which wins over the config
// file, which wins over the default.
func TestConfigPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		file, env, flag            string // values as text
		get                        func(config) any
		wantDef, wantFile, wantEnv any
		wantFlag                   any
	}{
		{"listen", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", func(c config) any { return c.listen },
			"127.0.0.1:8380", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"},
		{"hsm-max-sessions", "2", "3", "4", func(c config) any { return c.hsmSessions }, 8, 2, 3, 4},
		{"dev", "false", "1", "false", func(c config) any { return c.dev }, false, false, true, false},
		{"scheduler-interval", "1m", "2h", "3s", func(c config) any { return c.schedule },
			30 * time.Second, time.Minute, 2 * time.Hour, 3 * time.Second},
		{"pending-grace", "0s", "1m", "2m", func(c config) any { return c.pendingGrace },
			10 * time.Minute, time.Duration(0), time.Minute, 2 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfgFile := writeConfig(t, tc.name+": "+tc.file+"\n")
			env := map[string]string{envName(tc.name): tc.env}
			for _, step := range []struct {
				source string
				args   []string
				env    map[string]string
				want   any
			}{
				{"default", nil, nil, tc.wantDef},
				{"config file", []string{"--config", cfgFile}, nil, tc.wantFile},
				{"config file named by SIGIL_CONFIG", nil, map[string]string{"SIGIL_CONFIG": cfgFile}, tc.wantFile},
				{"environment over file", []string{"--config", cfgFile}, env, tc.wantEnv},
				{"flag over environment", []string{"--config", cfgFile, "--" + tc.name + "=" + tc.flag}, env, tc.wantFlag},
			} {
				c, _, err := readConfig(step.args, envOf(step.env), io.Discard)
				if err != nil {
					t.Fatalf("%s: %v", step.source, err)
				}
				if got := tc.get(c); got != step.want {
					t.Errorf("%s: %s = %v, want %v", step.source, tc.name, got, step.want)
				}
			}
		})
	}
}

// TestEverySettingFromEachSource checks that each setting of the table
// has a flag, an environment variable and a config file key that all reach
// the same field.
func TestEverySettingFromEachSource(t *testing.T) {
	sample := map[string]string{"*string": "/some/value", "*int": "5", "*bool": "true", "*time.Duration": "7s"}
	for _, s := range (&config{}).settings() {
		if s.name == "config" {
			continue
		}
		text := sample[fmt.Sprintf("%T", s.ptr)]
		if text == "" {
			t.Fatalf("%s: no sample value for %T", s.name, s.ptr)
		}
		field := func(c *config) any {
			for _, cs := range c.settings() {
				if cs.name == s.name {
					return reflect.ValueOf(cs.ptr).Elem().Interface()
				}
			}
			t.Fatalf("no setting %s", s.name)
			return nil
		}
		var got []any
		for _, src := range []struct {
			args []string
			env  map[string]string
		}{
			{[]string{"--" + s.name + "=" + text}, nil},
			{nil, map[string]string{envName(s.name): text}},
			{[]string{"--config", writeConfig(t, s.name+": "+text+"\n")}, nil},
		} {
			c, sourceErr, err := readConfig(src.args, envOf(src.env), io.Discard)
			if err != nil || sourceErr != nil {
				t.Fatalf("%s from %v %v: %v %v", s.name, src.args, src.env, err, sourceErr)
			}
			got = append(got, field(&c))
		}
		var zero config
		if got[0] == field(&zero) || got[0] != got[1] || got[1] != got[2] {
			t.Errorf("%s: flag, environment and file give %v", s.name, got)
		}
		if !strings.HasPrefix(envName(s.name), "SIGIL_") || strings.ContainsAny(envName(s.name), "-abcdefghijklmnopqrstuvwxyz") {
			t.Errorf("%s: environment variable %s", s.name, envName(s.name))
		}
	}
}

func TestConfigFileRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "listen: 127.0.0.1:1\nlisten-adress: x\n", []string{"line 2: listen-adress: unknown setting"}},
		{"flag spelling", "--dev: true\n", []string{"--dev: unknown setting"}},
		{"bad duration", "scheduler-interval: 30\n", []string{"line 1: scheduler-interval: \"30\": want a duration"}},
		{"bad number", "hsm-max-sessions: many\n", []string{"hsm-max-sessions: \"many\": want a whole number"}},
		{"bad bool", "dev: yes\n", []string{"dev: \"yes\": want true or false"}},
		{"list", "listen: [a, b]\n", []string{"listen: want a single plain value"}},
		{"mapping", "listen: {host: a}\n", []string{"listen: want a single plain value"}},
		{"null", "listen:\n", []string{"listen: no value"}},
		{"twice", "listen: a\ndev: true\nlisten: b\n", []string{"line 3: listen: set twice (first on line 1)"}},
		{"config in config", "config: other.yaml\n", []string{"config: a config file cannot name another"}},
		{"not a mapping", "- listen\n", []string{"want a mapping of settings"}},
		{"two documents", "dev: true\n---\ndev: false\n", []string{"more than one YAML document"}},
		{"bad YAML", "listen: \"a\n", []string{"yaml:"}},
		{"all reported", "bogus: 1\nhsm-max-sessions: x\npending-grace: 1\n",
			[]string{"bogus: unknown setting", "hsm-max-sessions", "pending-grace"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.yaml)
			_, err := parseConfig([]string{"--config", path}, envOf(nil), io.Discard)
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--config "+path) {
					t.Errorf("error %v, want it to name the file and mention %q", err, want)
				}
			}
		})
	}
	// Environment variables get the same checks, naming the variable.
	_, err := parseConfig(nil, envOf(map[string]string{"SIGIL_PENDING_GRACE": "ten minutes"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `SIGIL_PENDING_GRACE="ten minutes": want a duration`) {
		t.Errorf("bad duration in the environment: %v", err)
	}
	// A missing config file is named.
	missing := filepath.Join(t.TempDir(), "none.yaml")
	if _, err := parseConfig(nil, envOf(map[string]string{"SIGIL_CONFIG": missing}), io.Discard); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing config file: %v", err)
	}
	// An empty file, or one of comments only, sets nothing.
	for _, content := range []string{"", "# nothing yet\n"} {
		c, sourceErr, err := readConfig([]string{"--config", writeConfig(t, content)}, envOf(nil), io.Discard)
		if err != nil || sourceErr != nil || c.listen != "127.0.0.1:8380" {
			t.Errorf("config file %q: %+v, %v, %v", content, c, err, sourceErr)
		}
	}
}

// TestConfigFileOnly configures sigild from a config file alone, as the
// sample in deploy/examples does.
func TestConfigFileOnly(t *testing.T) {
	path := writeConfig(t, `# sigild settings
listen: 127.0.0.1:9000
database-url-file: /run/secrets/sigil/database-url
hsm-module: /lib/p11.so
hsm-token-label: "0123"
hsm-pin-file: /run/secrets/sigil/pin
hsm-max-sessions: 16
dev: true
log-level: debug
scheduler-interval: 1m
pending-grace: 5m
`)
	c, err := parseConfig([]string{"--config", path}, envOf(nil), io.Discard)
	want := config{configFile: path, listen: "127.0.0.1:9000", databaseURLFile: "/run/secrets/sigil/database-url", hsmModule: "/lib/p11.so",
		hsmTokenLabel: "0123", hsmPINFile: "/run/secrets/sigil/pin", hsmSessions: 16, maxInFlight: server.DefaultMaxInFlight, dev: true, logLevel: "debug",
		schedule: time.Minute, pendingGrace: 5 * time.Minute}
	if err != nil || c != want {
		t.Fatalf("config = %+v, %v\nwant %+v", c, err, want)
	}
	// The sample production config parses, and names every secret file.
	c, err = parseConfig([]string{"--config", "../../deploy/examples/sigild.yaml"}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.databaseURLFile == "" || c.hsmPINFile == "" || c.tlsKey == "" || c.auditSaltFile == "" || c.authConfig == "" || c.dev {
		t.Fatalf("sample config = %+v", c)
	}
}

func TestDatabaseURL(t *testing.T) {
	base := []string{"--dev", "--hsm-token-label", "t", "--hsm-pin-file", "p"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want error // nil: accepted
		text string
	}{
		{"URL without password", []string{"--database-url", "postgres://sigil@db:5432/sigil?sslmode=verify-full"}, nil, nil, ""},
		{"keyword/value without password", []string{"--database-url", "host=db user=sigil dbname=sigil"}, nil, nil, ""},
		{"URL file", []string{"--database-url-file", "/run/db-url"}, nil, nil, ""},
		{"empty password", []string{"--database-url", "postgres://sigil:@db/sigil"}, nil, nil, ""},
		{"password in URL", []string{"--database-url", "postgres://sigil:hunter2@db/sigil"}, nil, errPasswordInURL, ""},
		{"postgresql scheme", []string{"--database-url", "postgresql://sigil:hunter2@db/sigil"}, nil, errPasswordInURL, ""},
		{"password parameter", []string{"--database-url", "postgres://sigil@db/sigil?password=hunter2"}, nil, errPasswordInURL, ""},
		{"ssl password parameter", []string{"--database-url", "postgres://sigil@db/sigil?sslpassword=hunter2"}, nil, errPasswordInURL, ""},
		{"keyword/value password", []string{"--database-url", "host=db user=sigil password=hunter2"}, nil, errPasswordInURL, ""},
		{"keyword/value password first", []string{"--database-url", "password = 'hunter2' host=db"}, nil, errPasswordInURL, ""},
		{"password from the environment", nil, map[string]string{"SIGIL_DATABASE_URL": "postgres://sigil:hunter2@db/sigil"}, errPasswordInURL, ""},
		{"password from the config file", []string{"--config", writeConfig(t, "database-url: postgres://sigil:hunter2@db/sigil\n")}, nil, errPasswordInURL, ""},
		{"bad URL", []string{"--database-url", "postgres://sigil:hunter2@db:port/sigil"}, nil, nil, "not a valid postgres:// URL"},
		{"neither", nil, nil, nil, "the database is required: --database-url-file"},
		{"both", []string{"--database-url", "postgres://db/x", "--database-url-file", "/run/db-url"}, nil, nil, "give only one of --database-url"},
		{"both from different sources", []string{"--database-url-file", "/run/db-url"}, map[string]string{"SIGIL_DATABASE_URL": "postgres://db/x"}, nil, "give only one"},
		{"PGPASSWORD", []string{"--database-url", "postgres://db/x"}, map[string]string{"PGPASSWORD": "hunter2"}, nil, "PGPASSWORD is set"},
		{"PGSSLPASSWORD", []string{"--database-url", "postgres://db/x"}, map[string]string{"PGSSLPASSWORD": "hunter2"}, nil, "PGSSLPASSWORD is set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(append(base[:len(base):len(base)], tc.args...), envOf(tc.env), io.Discard)
			switch {
			case tc.want == nil && tc.text == "":
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("error %v, want %v", err, tc.want)
			case tc.text != "" && (err == nil || !strings.Contains(err.Error(), tc.text)):
				t.Fatalf("error %v, want it to mention %q", err, tc.text)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

// TestHelp checks that --help succeeds and names every setting's
// environment variable.
func TestHelp(t *testing.T) {
	var out strings.Builder
	if err := run(context.Background(), []string{"--help"}, envOf(nil), io.Discard, &out); err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, s := range (&config{}).settings() {
		flagShown := strings.Contains(out.String(), "  -"+s.name+" ") || strings.Contains(out.String(), "  -"+s.name+"\n")
		if !flagShown || !strings.Contains(out.String(), "(env "+envName(s.name)+")") {
			t.Errorf("--help does not show %s and %s:\n%s", s.name, envName(s.name), out.String())
		}
	}
}
