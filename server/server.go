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
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/sigil-kms/sigil/gen/sigil/v1/sigilv1connect"
	"github.com/sigil-kms/sigil/kms"
)

// MaxRequestBytes is the largest request message the server reads; larger
// ones fail with ResourceExhausted before any work is done.
const MaxRequestBytes = 1 << 20

// Options configures the handler. The zero value is usable.
type Options struct {
	// Logger receives one line per failed request, with its cause.
	// Defaults to slog.Default().
	Logger *slog.Logger
	// ReadyTimeout bounds the HSM and database checks of /readyz.
	// Defaults to 2 seconds.
	ReadyTimeout time.Duration
}

// New returns the HTTP handler serving the KeyManagementService RPCs,
// /healthz and /readyz.
func New(svc *kms.Service, opts Options) http.Handler {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 2 * time.Second
	}
	mux := http.NewServeMux()
	path, h := sigilv1connect.NewKeyManagementServiceHandler(&handler{svc: svc},
		connect.WithReadMaxBytes(MaxRequestBytes),
		connect.WithInterceptors(errorInterceptor(log)),
		connect.WithRecover(func(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
			log.LogAttrs(ctx, slog.LevelError, "panic", slog.String("rpc", spec.Procedure), slog.Any("panic", p))
			return connect.NewError(connect.CodeInternal, nil)
		}),
	)
	mux.Handle(path, h)
	mux.HandleFunc("GET /healthz", healthz)
	mux.Handle("GET /readyz", readyz(svc.Ready, opts.ReadyTimeout, log))
	return mux
}
