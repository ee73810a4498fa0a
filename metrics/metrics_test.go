package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/hsm"
	"github.com/sigil-kms/sigil/hsm/hsmtest"
	"github.com/sigil-kms/sigil/metrics"
)

func page(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// TestBackend runs the hsm conformance suite through the decorator, then
// checks that calls are timed and failures counted by kind.
func TestBackend(t *testing.T) {
	m := metrics.New()
	hsmtest.Exercise(t, func(t *testing.T) hsm.Backend { return m.Backend(hsmtest.NewMemory()) })

	m = metrics.New()
	f := hsmtest.NewFaulty(hsmtest.NewMemory())
	b := m.Backend(f)
	ctx := context.Background()
	if _, err := b.Random(ctx, 16); err != nil {
		t.Fatal(err)
	}
	f.Fail(fmt.Errorf("%w: device error", hsm.ErrUnavailable), hsmtest.MethodRandom)
	if _, err := b.Random(ctx, 16); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Random = %v, want the injected error unchanged", err)
	}
	f.Recover()
	if err := b.Destroy(ctx, make([]byte, 16)); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("Destroy of a missing key = %v, want ErrNotFound", err)
	}
	p := page(t, m)
	for _, want := range []string{
		`sigil_hsm_call_duration_seconds_count{op="random"} 2`,
		`sigil_hsm_errors_total{kind="unavailable",op="random"} 1`,
		`sigil_hsm_errors_total{kind="not_found",op="destroy"} 1`,
	} {
		if !strings.Contains(p, want) {
			t.Errorf("metrics page lacks %q:\n%s", want, grep(p, "sigil_hsm"))
		}
	}
}

func TestRequestsAuditScheduler(t *testing.T) {
	m := metrics.New()
	m.Request("Encrypt", "ok", 2*time.Millisecond)
	m.Request("Encrypt", "ok", time.Millisecond)
	m.Request("Encrypt", "unavailable", time.Millisecond)
	m.AuditBatch(3, time.Millisecond, nil)
	m.AuditBatch(1, time.Second, errors.New("down"))
	m.SchedulerRun(true, time.Millisecond, nil)
	m.SchedulerRun(false, 0, nil)
	m.SchedulerRun(true, time.Millisecond, errors.New("failed"))
	m.WatchCache(func() metrics.CacheStats { return metrics.CacheStats{Hits: 7, Misses: 2} })
	m.WatchSessions(func() metrics.SessionStats { return metrics.SessionStats{InUse: 1, Idle: 3, Max: 8} })
	p := page(t, m)
	for _, want := range []string{
		`sigil_requests_total{code="ok",rpc="Encrypt"} 2`,
		`sigil_requests_total{code="unavailable",rpc="Encrypt"} 1`,
		`sigil_request_duration_seconds_count{rpc="Encrypt"} 3`,
		`sigil_audit_batch_records_sum 4`,
		`sigil_audit_flush_duration_seconds_count{result="error"} 1`,
		`sigil_scheduler_runs_total{result="skipped"} 1`,
		`sigil_scheduler_runs_total{result="error"} 1`,
		`sigil_scheduler_run_duration_seconds_count 2`,
		`sigil_key_cache_hits_total 7`,
		`sigil_hsm_sessions_idle 3`,
		`sigil_hsm_sessions_max 8`,
	} {
		if !strings.Contains(p, want) {
			t.Errorf("metrics page lacks %q:\n%s", want, grep(p, "sigil_"))
		}
	}
}

func grep(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
