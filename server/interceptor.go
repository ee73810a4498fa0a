package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"

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

// errorInterceptor gives each request an id, maps core errors to Connect
// errors in one place and logs the cause of every failure with the id.
func errorInterceptor(log *slog.Logger) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			id := newRequestID()
			ctx = context.WithValue(ctx, requestIDKey{}, id)
			res, err := next(ctx, req)
			if err == nil {
				res.Header().Set(RequestIDHeader, id)
				return res, nil
			}
			cerr, serverFault := toConnectError(err)
			cerr.Meta().Set(RequestIDHeader, id)
			level := slog.LevelInfo
			if serverFault {
				level = slog.LevelError
			}
			log.LogAttrs(ctx, level, "request failed",
				slog.String("request_id", id),
				slog.String("rpc", req.Spec().Procedure),
				slog.String("code", cerr.Code().String()),
				slog.String("cause", err.Error()))
			return nil, cerr
		}
	}
}
