package server

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/sigil-kms/sigil/audit"
	"github.com/sigil-kms/sigil/kms"
	"github.com/sigil-kms/sigil/metrics"
)

// JWKSMaxAge is how long verifiers may cache a JWKS response. A signing
// version is published at least this long before it signs anything.
const JWKSMaxAge = 5 * time.Minute

// httpStatus maps Connect codes to HTTP statuses as the Connect protocol
// does, for the plain HTTP endpoints.
var httpStatus = map[connect.Code]int{
	connect.CodeInvalidArgument:    http.StatusBadRequest,
	connect.CodeFailedPrecondition: http.StatusBadRequest,
	connect.CodeNotFound:           http.StatusNotFound,
	connect.CodeResourceExhausted:  http.StatusTooManyRequests,
	connect.CodeUnavailable:        http.StatusServiceUnavailable,
	connect.CodeDeadlineExceeded:   http.StatusGatewayTimeout,
	connect.CodeCanceled:           499,
}

// jwks serves the JSON Web Key Set of every signing key (name "") or of the
// key named by the {name} path value, with an ETag and Cache-Control, and
// answers 304 to a matching If-None-Match. Each request gets a log line
// and is counted as the RPC "JWKS".
func jwks(svc *kms.Service, log *slog.Logger, m *metrics.Metrics, perKey bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := RequestID(r.Context())
		name := ""
		if perKey {
			name = r.PathValue("name")
		}
		code := "ok"
		defer func() {
			rec := audit.Record{RequestID: id, RPC: "JWKS", Key: name}
			logRequest(r.Context(), log, m, slog.LevelInfo, rec, code, time.Since(start), "")
		}()
		set, err := svc.JWKS(r.Context(), name)
		if err != nil {
			code = writeHTTPError(w, r, log, id, err)
			return
		}
		w.Header().Set("ETag", set.ETag)
		w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(JWKSMaxAge.Seconds())))
		if etagMatch(r.Header.Get("If-None-Match"), set.ETag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(set.JSON)
	}
}

// etagMatch reports whether an If-None-Match header matches etag.
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// writeHTTPError writes a core error as Connect-style JSON with the status
// the Connect protocol uses, logs the cause under the request id and
// returns the Connect code's name.
func writeHTTPError(w http.ResponseWriter, r *http.Request, log *slog.Logger, id string, err error) string {
	cerr, serverFault := toConnectError(err)
	level := slog.LevelInfo
	if serverFault {
		level = slog.LevelError
	}
	log.LogAttrs(r.Context(), level, "request failed",
		slog.String("request_id", id), slog.String("path", r.URL.Path),
		slog.String("code", cerr.Code().String()), slog.String("cause", err.Error()))
	status, ok := httpStatus[cerr.Code()]
	if !ok {
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": cerr.Code().String(), "message": cerr.Message()})
	return cerr.Code().String()
}
