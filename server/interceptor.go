package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"connectrpc.com/connect"
)

// RequestIDHeader is the response header that carries the request id, the
// same id that the server's log lines for the request carry.
const RequestIDHeader = "Sigil-Request-Id"

type requestIDKey struct{}

// RequestID returns the id of the request ctx belongs to, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// withRequestID gives every HTTP request an id, in its context and in the
// response's RequestIDHeader, before anything else can fail.
func withRequestID(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := newRequestID()
		w.Header().Set(RequestIDHeader, id)
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// errorInterceptor bounds each call with a deadline (the caller's, or
// timeout if it sets none or a longer one) and maps core errors to Connect
// errors in one place. The access interceptor, inside it, logs each
// request with its failure's cause.
func errorInterceptor(timeout time.Duration) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if d, ok := ctx.Deadline(); !ok || time.Until(d) > timeout {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			res, err := next(ctx, req)
			if err == nil {
				return res, nil
			}
			cerr, _ := toConnectError(err)
			return nil, cerr
		}
	}
}

// errOverloaded is the answer to an RPC beyond the in-flight limit.
var errOverloaded = connect.NewError(connect.CodeResourceExhausted, errors.New("too many requests in flight; retry later"))

// limitInterceptor serves at most limit RPCs at once and refuses the rest
// at once with ResourceExhausted, so that overload shows as fast refusals
// instead of an unbounded queue in front of the HSM and the database. A
// refused RPC is still audited, by the HTTP-level fallback.
func limitInterceptor(limit int) connect.UnaryInterceptorFunc {
	slots := make(chan struct{}, limit)
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			select {
			case slots <- struct{}{}:
			default:
				return nil, errOverloaded
			}
			defer func() { <-slots }()
			return next(ctx, req)
		}
	}
}
