package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
)

// credentials are the CLI's ways to authenticate to a sigild running
// without --dev: a bearer token read from a file, and a client certificate.
type credentials struct {
	tokenFile, caFile, certFile, keyFile string
}

// httpClient returns the HTTP client for the credentials, or
// http.DefaultClient when none are set. A bearer token is sent only over
// TLS or to a loopback address.
func (cr credentials) httpClient(addr string) (*http.Client, error) {
	if cr.tokenFile != "" {
		u, err := url.Parse(addr)
		if err != nil {
			return nil, fmt.Errorf("--addr: %w", err)
		}
		host := u.Hostname()
		ip, _ := netip.ParseAddr(host)
		if u.Scheme != "https" && host != "localhost" && !ip.IsLoopback() {
			return nil, errors.New("a bearer token is sent only over https (or to a loopback address)")
		}
	}
	if cr.tokenFile == "" && cr.caFile == "" && cr.certFile == "" && cr.keyFile == "" {
		return http.DefaultClient, nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cr.caFile != "" {
		pem, err := os.ReadFile(cr.caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", cr.caFile)
		}
		cfg.RootCAs = pool
	}
	if (cr.certFile == "") != (cr.keyFile == "") {
		return nil, errors.New("--cert and --key go together")
	}
	if cr.certFile != "" {
		cert, err := tls.LoadX509KeyPair(cr.certFile, cr.keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	tr.TLSClientConfig = cfg
	var rt http.RoundTripper = tr
	if cr.tokenFile != "" {
		b, err := os.ReadFile(cr.tokenFile)
		if err != nil {
			return nil, err
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("%s is empty", cr.tokenFile)
		}
		rt = bearerTransport{token: token, next: tr}
	}
	// Never follow a redirect with the credentials to another place.
	return &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}

// bearerTransport adds an Authorization: Bearer header to every request.
type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
