package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/sigil-kms/sigil/audit"
	"github.com/sigil-kms/sigil/metrics"
)

// logRequest writes a request's one log line and counts it in m (if not
// nil): who called which RPC on which key and version, the code, the
// duration and, for a failure, its cause. Nothing the caller sent other
// than the key name is logged.
func logRequest(ctx context.Context, log *slog.Logger, m *metrics.Metrics, level slog.Level,
	rec audit.Record, code string, d time.Duration, cause string) {
	if m != nil {
		m.Request(rec.RPC, code, d)
	}
	if !log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", rec.RequestID),
		slog.String("identity", rec.Identity),
		slog.String("rpc", rec.RPC),
		slog.String("key", rec.Key),
		slog.Uint64("version", uint64(rec.KeyVersion)),
		slog.String("code", code),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
	}
	if cause != "" {
		attrs = append(attrs, slog.String("cause", cause))
	}
	log.LogAttrs(ctx, level, "request", attrs...)
}
