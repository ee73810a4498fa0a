// Package client is the Go SDK for Sigil: a typed client for the
// KeyManagementService, a crypto.Signer whose private key stays in Sigil's
// HSM, and a JWT verifier that checks tokens against a Sigil JWKS URL.
//
// A Client, a Signer and a Verifier are safe for concurrent use.
package client

import (
	"context"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
)

// Client calls a Sigil server. Its embedded KeyManagementServiceClient
// offers every RPC; the methods below are shortcuts for common ones.
type Client struct {
	sigilv1connect.KeyManagementServiceClient
}

// New returns a client for the server at baseURL (for example
// "https://sigil.internal:8380"). A nil httpClient means
// http.DefaultClient. Options are passed to the Connect client, for
// example connect.WithGRPC().
func New(baseURL string, httpClient *http.Client, opts ...connect.ClientOption) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{sigilv1connect.NewKeyManagementServiceClient(httpClient, strings.TrimRight(baseURL, "/"), opts...)}
}

// Encrypt encrypts plaintext under the named key's primary version, bound
// to aad.
func (c *Client) Encrypt(ctx context.Context, name string, plaintext, aad []byte) ([]byte, error) {
	res, err := c.KeyManagementServiceClient.Encrypt(ctx, &sigilv1.EncryptRequest{Name: name, Plaintext: plaintext, AssociatedData: aad})
	if err != nil {
		return nil, err
	}
	return res.GetCiphertext(), nil
}

// Decrypt decrypts a ciphertext of the named key with the same aad.
func (c *Client) Decrypt(ctx context.Context, name string, ciphertext, aad []byte) ([]byte, error) {
	res, err := c.KeyManagementServiceClient.Decrypt(ctx, &sigilv1.DecryptRequest{Name: name, Ciphertext: ciphertext, AssociatedData: aad})
	if err != nil {
		return nil, err
	}
	return res.GetPlaintext(), nil
}
