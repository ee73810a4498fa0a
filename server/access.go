package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/sigil-kms/sigil/audit"
	"github.com/sigil-kms/sigil/authn"
	sigilv1 "github.com/sigil-kms/sigil/gen/sigil/v1"
	"github.com/sigil-kms/sigil/metrics"
	"github.com/sigil-kms/sigil/policy"
)

// auditTimeout bounds the write of an audit record, which runs even after
// the caller's deadline so that no request goes unrecorded.
const auditTimeout = 10 * time.Second

type identityKey struct{}

// authResult is the outcome of authenticating one HTTP request.
type authResult struct {
	id  authn.Identity
	err error
}

// auditedKey marks, in a request's context, whether the interceptor wrote
// the request's audit record.
type auditedKey struct{}

// withIdentity authenticates every request and keeps the result in its
// context. It refuses nothing itself: the access interceptor turns a
// failure into Unauthenticated, so that the refusal is audited like any
// other outcome. A request that connect-go refuses before the interceptor
// runs (a body that does not parse or is too large) gets its record here,
// after the error response: no result went out.
func (a *access) withIdentity(auth Authenticator, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if auth != nil {
			id, err := auth.Authenticate(r)
			ctx = context.WithValue(ctx, identityKey{}, authResult{id, err})
		}
		audited := new(atomic.Bool)
		ctx = context.WithValue(ctx, auditedKey{}, audited)
		sw := &statusWriter{ResponseWriter: w}
		start := time.Now()
		h.ServeHTTP(sw, r.WithContext(ctx))
		if audited.Load() {
			return
		}
		rpc, _ := policy.RPCFromProcedure(r.URL.Path)
		identity, err := a.identity(ctx)
		if err != nil {
			identity = ""
		}
		rec := audit.Record{RequestID: RequestID(ctx), Identity: identity, RPC: rpc, Peer: r.RemoteAddr, Outcome: sw.outcome()}
		a.logRefused(ctx, rec, time.Since(start))
		if a.audit == nil {
			return
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
		defer cancel()
		if err := a.audit.Append(actx, rec); err != nil {
			a.log.LogAttrs(ctx, slog.LevelError, "audit record of a refused request not written",
				slog.String("request_id", rec.RequestID), slog.String("cause", err.Error()))
		}
	})
}

// logRefused logs and counts a request that connect-go, or the in-flight
// limit, refused before the interceptor ran.
func (a *access) logRefused(ctx context.Context, rec audit.Record, d time.Duration) {
	logRequest(ctx, a.log, a.metrics, slog.LevelInfo, rec, rec.Outcome, d, "refused before the handler")
}

// statusWriter remembers the HTTP status of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streaming protocols flush through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// outcome names the Connect code of a response refused before any
// handler: from the gRPC status trailer, else from the HTTP status.
func (w *statusWriter) outcome() string {
	h := w.Header()
	for _, name := range []string{"Grpc-Status", http.TrailerPrefix + "Grpc-Status"} {
		if v := h.Get(name); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n > 0 && n <= 16 {
				return connect.Code(n).String()
			}
		}
	}
	switch w.status {
	case http.StatusBadRequest:
		return connect.CodeInvalidArgument.String()
	case http.StatusTooManyRequests, http.StatusRequestEntityTooLarge:
		return connect.CodeResourceExhausted.String()
	case http.StatusUnsupportedMediaType, http.StatusMethodNotAllowed, http.StatusNotFound:
		return connect.CodeUnimplemented.String()
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated.String()
	}
	return connect.CodeUnknown.String()
}

// access checks each RPC against the policy and writes its audit record
// before the result goes back; if the record cannot be written, the caller
// gets Unavailable and no result.
type access struct {
	log     *slog.Logger
	metrics *metrics.Metrics // nil: no metrics
	policy  func() *policy.Policy
	audit   audit.Log
	salt    []byte
	now     func() time.Time
	dev     bool
}

var (
	errUnauthenticated = connect.NewError(connect.CodeUnauthenticated, errors.New("unauthenticated"))
	errDenied          = connect.NewError(connect.CodePermissionDenied, errors.New("permission denied"))
	// errAuditDown is the generic, retryable answer when the audit log or
	// an issuer's keys cannot be reached.
	errAuditDown = connect.NewError(connect.CodeUnavailable, errors.New("service unavailable; retry later"))
)

func (a *access) interceptor() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (res connect.AnyResponse, err error) {
			start := time.Now()
			if done, ok := ctx.Value(auditedKey{}).(*atomic.Bool); ok {
				done.Store(true)
			}
			rpc, _ := policy.RPCFromProcedure(req.Spec().Procedure)
			msg := req.Any()
			rec := audit.Record{RequestID: RequestID(ctx), RPC: rpc, Key: nameOf(msg), Peer: req.Peer().Addr}
			var cause error // why the request failed, for the log
			defer func() { a.logRequest(ctx, rec, time.Since(start), err, cause) }()
			identity, authErr := a.identity(ctx)
			rec.Identity = identity
			if aad := associatedDataOf(msg); len(aad) > 0 && a.salt != nil {
				rec.Details = map[string]string{audit.DetailAADHMAC: audit.HMAC(a.salt, aad)}
			}
			if dest := destinationOf(msg); dest != "" {
				if rec.Details == nil {
					rec.Details = map[string]string{}
				}
				rec.Details["destination"] = dest
			}

			// One policy for the whole request, even if a reload lands
			// during it.
			var p *policy.Policy
			if a.policy != nil {
				p = a.policy()
			}
			err = authErr
			if err == nil {
				err = a.authorize(p, identity, rpc, msg)
			}
			if err == nil && p != nil && rpc == "ListKeys" {
				ctx = context.WithValue(ctx, visibleKey{}, func(name string) bool { return p.Allow(identity, "GetKey", name) })
			}
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
			defer cancel()
			if err == nil && policy.IsAdmin(rpc) && a.audit != nil {
				// A change to keys is recorded before it is made: if the
				// intent cannot be written, nothing changes.
				intent := rec
				intent.Outcome = audit.OutcomeIntent
				if aerr := a.audit.Append(actx, intent); aerr != nil {
					cause = fmt.Errorf("audit record of the intent not written; request refused: %w", aerr)
					return nil, errAuditDown
				}
			}
			if err == nil {
				res, err = next(ctx, req)
			}
			if err == nil {
				rec.Outcome = audit.OutcomeOK
				rec.KeyVersion = versionOf(res)
			} else {
				cause = err
				cerr, _ := toConnectError(err)
				rec.Outcome = cerr.Code().String()
			}
			if a.audit == nil {
				return res, err
			}
			if aerr := a.audit.Append(actx, rec); aerr != nil {
				cause = errors.Join(cause, fmt.Errorf("audit record not written; request failed: %w", aerr))
				return nil, errAuditDown
			}
			return res, err
		}
	}
}

// logRequest logs and counts an RPC the interceptor served; a failure
// that is the server's fault logs at level error.
func (a *access) logRequest(ctx context.Context, rec audit.Record, d time.Duration, err, cause error) {
	code, level := "ok", slog.LevelInfo
	if err != nil {
		cerr, serverFault := toConnectError(err)
		code = cerr.Code().String()
		if serverFault {
			level = slog.LevelError
		}
	}
	why := ""
	if cause != nil {
		why = cause.Error()
	}
	logRequest(ctx, a.log, a.metrics, level, rec, code, d, why)
}

// identity returns the caller's identity name, or Unauthenticated.
func (a *access) identity(ctx context.Context) (string, error) {
	if a.dev {
		return DevIdentity, nil
	}
	ar, ok := ctx.Value(identityKey{}).(authResult)
	if ok && errors.Is(ar.err, authn.ErrUnavailable) {
		a.log.LogAttrs(ctx, slog.LevelError, "credentials cannot be checked",
			slog.String("request_id", RequestID(ctx)), slog.String("cause", ar.err.Error()))
		return "", errAuditDown // the same generic, retryable Unavailable
	}
	if !ok || ar.err != nil {
		if ok {
			a.log.LogAttrs(ctx, slog.LevelInfo, "unauthenticated",
				slog.String("request_id", RequestID(ctx)), slog.String("reason", ar.err.Error()))
		}
		return "", errUnauthenticated
	}
	return ar.id.Name, nil
}

// authorize checks the RPC against the policy; ReEncrypt needs the right on
// both keys, and SignJWT's claims must fit the identity's claim policy.
func (a *access) authorize(p *policy.Policy, identity, rpc string, msg any) error {
	if p == nil {
		return nil
	}
	if !p.Allow(identity, rpc, nameOf(msg)) {
		return errDenied
	}
	if dest := destinationOf(msg); dest != "" && !p.Allow(identity, rpc, dest) {
		return errDenied
	}
	if req, ok := msg.(*sigilv1.SignJWTRequest); ok {
		if err := p.CheckJWT(identity, req.GetName(), req.GetClaims().AsMap(), a.now()); err != nil {
			if errors.Is(err, policy.ErrClaimsRefused) {
				return connect.NewError(connect.CodePermissionDenied, err)
			}
			return errDenied
		}
	}
	return nil
}

type visibleKey struct{}

// visibleKeys returns the predicate of the keys the caller may see, or nil
// when every key is visible.
func visibleKeys(ctx context.Context) func(string) bool {
	f, _ := ctx.Value(visibleKey{}).(func(string) bool)
	return f
}

func nameOf(msg any) string {
	if m, ok := msg.(interface{ GetName() string }); ok {
		return m.GetName()
	}
	return ""
}

func destinationOf(msg any) string {
	if m, ok := msg.(interface{ GetDestinationName() string }); ok {
		return m.GetDestinationName()
	}
	return ""
}

func associatedDataOf(msg any) []byte {
	if m, ok := msg.(interface{ GetAssociatedData() []byte }); ok {
		return m.GetAssociatedData()
	}
	return nil
}

// versionOf returns the key version a response names, or 0.
func versionOf(res connect.AnyResponse) uint32 {
	if res == nil {
		return 0
	}
	switch m := res.Any().(type) {
	case interface{ GetKeyVersion() uint32 }:
		return m.GetKeyVersion()
	case interface{ GetKeyVersion() *sigilv1.KeyVersion }:
		return m.GetKeyVersion().GetVersion()
	case interface{ GetKey() *sigilv1.Key }:
		return m.GetKey().GetPrimaryVersion()
	}
	return 0
}
