package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var (
	// errSecretExposed is wrapped by the error about a secret file that
	// the group or others may read.
	errSecretExposed = errors.New("secret file readable by group or others")
	// errNotRegular is wrapped by the error about a secret file that is
	// not a regular file.
	errNotRegular = errors.New("not a regular file")
	// errPasswordInURL is the error about a --database-url that holds a
	// password.
	errPasswordInURL = errors.New("--database-url (SIGIL_DATABASE_URL) holds a password; put the URL in a file of mode 600 and give --database-url-file (SIGIL_DATABASE_URL_FILE) instead")
)

// wrapped is an error with its own message that wraps a sentinel error.
type wrapped struct {
	msg string
	err error
}

func (w wrapped) Error() string { return w.msg }
func (w wrapped) Unwrap() error { return w.err }

// maxSecretBytes is the largest secret file read.
const maxSecretBytes = 1 << 20

// checkSecretFiles checks every secret file c names, as openSecret does,
// and reports all the problems together. sigild runs it before it opens
// anything, so that it refuses to start on an exposed secret.
func (c config) checkSecretFiles() error {
	var errs []error
	for _, s := range c.settings() {
		p, _ := s.ptr.(*string)
		if s.secret == "" || p == nil || *p == "" {
			continue
		}
		f, err := openSecret(s, *p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_ = f.Close()
	}
	return errors.Join(errs...)
}

// secretSetting returns the setting of the secret file of flag name.
func secretSetting(name string) setting {
	for _, s := range (&config{}).settings() {
		if s.name == name {
			return s
		}
	}
	panic("no setting " + name)
}

// readSecret reads the secret file at path, named by the flag name, after
// checking it as openSecret does.
func readSecret(name, path string) ([]byte, error) {
	s := secretSetting(name)
	f, err := openSecret(s, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return nil, fmt.Errorf("--%s %s: cannot read the %s: %w", s.name, path, s.secret, pathErr(err))
	}
	if len(b) > maxSecretBytes {
		return nil, fmt.Errorf("--%s %s: the %s is larger than %d bytes", s.name, path, s.secret, maxSecretBytes)
	}
	return b, nil
}

// openSecret opens the secret file at path, named by the setting s. The
// file, after symlinks (a Kubernetes secret volume links each key to a file
// under ..data/), must be a regular file that sigild can read and that
// neither the group nor others can: whoever reads it has the secret.
// The mode is checked both before opening, so that a FIFO does not block,
// and on the open file, so that a file swapped in between is checked too.
func openSecret(s setting, path string) (*os.File, error) {
	at := "--" + s.name + " " + path
	if target, err := filepath.EvalSymlinks(path); err == nil && target != path && filepath.Clean(path) != target {
		at += " (-> " + target + ")"
	}
	fi, err := os.Stat(path)
	if err != nil {
		if l, lerr := os.Lstat(path); lerr == nil && l.Mode()&fs.ModeSymlink != 0 && errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: cannot read the %s: a symlink to a missing file: %w", at, s.secret, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("%s: cannot read the %s: %w", at, s.secret, pathErr(err))
	}
	if err := checkSecretMode(s, at, fi); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot read the %s: %w", at, s.secret, pathErr(err))
	}
	if fi, err = f.Stat(); err == nil {
		err = checkSecretMode(s, at, fi)
	}
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// checkSecretMode checks that fi is a regular file private to its owner.
func checkSecretMode(s setting, at string, fi fs.FileInfo) error {
	switch {
	case fi.IsDir():
		return wrapped{fmt.Sprintf("%s: the %s is a directory, not a regular file", at, s.secret), errNotRegular}
	case !fi.Mode().IsRegular():
		return wrapped{fmt.Sprintf("%s: the %s is not a regular file (%s)", at, s.secret, fi.Mode().Type()), errNotRegular}
	case fi.Mode().Perm()&0o077 != 0:
		return wrapped{fmt.Sprintf("%s: mode %04o lets group/other read the %s; chmod 600 (or 400)", at, fi.Mode().Perm(), s.secret), errSecretExposed}
	}
	return nil
}

// pathErr returns the cause of a *fs.PathError, whose message would repeat
// the path.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readPIN reads the PIN file, dropping a trailing newline.
func readPIN(path string) (string, error) {
	b, err := readSecret("hsm-pin-file", path)
	if err != nil {
		return "", err
	}
	pin := strings.TrimRight(string(b), "\r\n")
	if pin == "" {
		return "", fmt.Errorf("--hsm-pin-file %s: the HSM PIN file is empty", path)
	}
	return pin, nil
}

// dbURL returns the Postgres URL: the content of --database-url-file
// without a trailing newline, or --database-url.
func (c config) dbURL() (string, error) {
	if c.databaseURLFile == "" {
		return c.databaseURL, nil
	}
	b, err := readSecret("database-url-file", c.databaseURLFile)
	if err != nil {
		return "", err
	}
	u := strings.TrimSpace(string(b))
	if u == "" {
		return "", fmt.Errorf("--database-url-file %s: the database URL file is empty", c.databaseURLFile)
	}
	return u, nil
}

// checkDatabase checks that exactly one of --database-url and
// --database-url-file is given, and that --database-url holds no password.
// The errors never show the URL.
func (c config) checkDatabase() error {
	switch {
	case c.databaseURL == "" && c.databaseURLFile == "":
		return errors.New("the database is required: --database-url-file (SIGIL_DATABASE_URL_FILE), a private file holding the Postgres URL, or --database-url (SIGIL_DATABASE_URL) for a URL without a password")
	case c.databaseURL != "" && c.databaseURLFile != "":
		return errors.New("give only one of --database-url (SIGIL_DATABASE_URL) and --database-url-file (SIGIL_DATABASE_URL_FILE)")
	case c.databaseURL != "":
		return checkNoPassword(c.databaseURL)
	}
	return nil
}

// kvPassword finds a password in a keyword/value connection string. It
// errs on the side of finding one.
var kvPassword = regexp.MustCompile(`(?i)(^|\s)(ssl)?password\s*=`)

// checkNoPassword refuses a Postgres URL or keyword/value connection string
// that holds a password: flags show in the process list, and environment
// variables and config files are not kept private.
func checkNoPassword(dsn string) error {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		if kvPassword.MatchString(dsn) {
			return errPasswordInURL
		}
		return nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		// The URL is not shown: it may hold a password.
		return errors.New("--database-url (SIGIL_DATABASE_URL) is not a valid postgres:// URL (the value is not shown, as it may hold a password)")
	}
	if pw, ok := u.User.Password(); ok && pw != "" {
		return errPasswordInURL
	}
	q := u.Query()
	if q.Has("password") || q.Has("sslpassword") {
		return errPasswordInURL
	}
	return nil
}
