// Package server exposes a kms.Service over Connect (Connect, gRPC and
// gRPC-Web on one handler) and plain HTTP for health. Handlers only decode,
// call the core and encode; errors are mapped to Connect codes in one
// function, and their causes are logged with the request id.
//
// The handler returned by New is safe for concurrent use.
package server

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/sigil-kms/sigil/audit"
	"github.com/sigil-kms/sigil/authn"
	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/metrics"
	"github.com/sigil-kms/sigil/policy"
)

// MaxRequestBytes is the largest request message the server reads; larger
// ones fail with ResourceExhausted before any work is done.
const MaxRequestBytes = 1 << 20

// Options configures the handler. The zero value is usable.
type Options struct {
	// Logger receives one line per request (level info, or error for a
	// failure that is the server's), with the cause of a failure.
	// Defaults to slog.Default().
	Logger *slog.Logger
	// ReadyTimeout bounds the HSM and database checks of /readyz.
	// Defaults to 2 seconds.
	ReadyTimeout time.Duration
	// RequestTimeout bounds every RPC whose caller sets no shorter
	// deadline. Defaults to 30 seconds.
	RequestTimeout time.Duration

	// Authenticator establishes the caller of each RPC. Nil means
	// development mode: every caller is DevIdentity.
	Authenticator Authenticator
	// Policy returns the authorization policy in force, for each RPC. Nil
	// means every authenticated caller may call everything (development
	// mode).
	Policy func() *policy.Policy
	// Audit records every RPC, allowed, refused or failed, before its
	// result is returned; if it cannot, the RPC fails with Unavailable.
	// Nil disables auditing (unit tests only; sigild always sets it).
	Audit audit.Log
	// AuditSalt keys the HMAC of associated data in audit records. It
	// should be secret and the same on every replica.
	AuditSalt []byte
	// Now is the clock of SignJWT claim checks. Defaults to time.Now.
	Now func() time.Time
	// MaxInFlight is the most RPCs served at once; one more is refused at
	// once with ResourceExhausted rather than queued. Defaults to
	// DefaultMaxInFlight.
	MaxInFlight int
	// Metrics, if set, counts and times every RPC, and is served at
	// /metrics.
	Metrics *metrics.Metrics
}

// Authenticator establishes who sent a request.
type Authenticator interface {
	// Authenticate returns the caller's identity, or an error wrapping
	// authn.ErrUnauthenticated.
	Authenticate(r *http.Request) (authn.Identity, error)
}

// DefaultMaxInFlight is Options.MaxInFlight's default: enough for
// hundreds of concurrent callers, few enough that the HSM's and the
// database's queues stay bounded.
const DefaultMaxInFlight = 1024

// DevIdentity is the identity of every caller in development mode.
const DevIdentity = "dev"

// New returns the HTTP handler serving the KeyManagementService RPCs,
// the JWKS documents (/.well-known/jwks.json, /v1/keys/{name}/jwks.json),
// /healthz and /readyz.
func New(svc *kms.Service, opts Options) http.Handler {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 2 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	acc := &access{log: log, metrics: opts.Metrics, policy: opts.Policy, audit: opts.Audit, salt: opts.AuditSalt, now: opts.Now, dev: opts.Authenticator == nil}
	mux := http.NewServeMux()
	path, h := sigilv1connect.NewKeyManagementServiceHandler(&handler{svc: svc},
		connect.WithReadMaxBytes(MaxRequestBytes),
		// Responses are never compressed: ciphertexts, signatures and
		// random bytes do not shrink, compressing costs a sixth of an
		// Encrypt's CPU, and compressing secrets next to caller-chosen
		// bytes leaks them through the length (CRIME). Compressed
		// requests are still accepted.
		connect.WithCompressMinBytes(math.MaxInt32),
		connect.WithInterceptors(limitInterceptor(opts.MaxInFlight), errorInterceptor(opts.RequestTimeout), acc.interceptor()),
		connect.WithRecover(func(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
			log.LogAttrs(ctx, slog.LevelError, "panic", slog.String("rpc", spec.Procedure), slog.Any("panic", p))
			return connect.NewError(connect.CodeInternal, nil)
		}),
	)
	// connect-go enforces MaxRequestBytes on the decoded message; the
	// MaxBytesHandler also stops reading a larger body on the wire.
	mux.Handle(path, acc.withIdentity(opts.Authenticator, http.MaxBytesHandler(h, 2*MaxRequestBytes)))
	// gRPC health (grpc.health.v1), for load balancers and grpcurl: it
	// reports whether the HSM and the database answer.
	mux.Handle(grpchealth.NewHandler(readyChecker{svc: svc, timeout: opts.ReadyTimeout}))
	// Server reflection, so that grpcurl and buf curl can list and call
	// the API without its .proto files. It reveals only the schema, which
	// is public.
	reflector := grpcreflect.NewStaticReflector(sigilv1connect.KeyManagementServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	if opts.Metrics != nil {
		mux.Handle("GET /metrics", opts.Metrics.Handler())
	}
	mux.HandleFunc("GET /healthz", healthz)
	mux.Handle("GET /readyz", readyz(svc.Ready, opts.ReadyTimeout, log))
	mux.Handle("GET /.well-known/jwks.json", jwks(svc, log, opts.Metrics, false))
	mux.Handle("GET /v1/keys/{name}/jwks.json", jwks(svc, log, opts.Metrics, true))
	return withRequestID(mux)
}
