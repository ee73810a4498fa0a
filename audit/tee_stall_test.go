package audit

import (
	"context"
	"errors"
	"testing"
	"time"
)

// stalledWriter blocks every Write until release is closed.
type stalledWriter struct{ release chan struct{} }

func (w stalledWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

// TestTeeStalledOutput checks that a reader that stops reading fails the
// Append at its deadline instead of holding it.
func TestTeeStalledOutput(t *testing.T) {
	w := stalledWriter{release: make(chan struct{})}
	defer close(w.release)
	log := Tee(NewMemory(time.Now), w)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- log.Append(ctx, Record{RPC: "Encrypt", Outcome: OutcomeOK}) }()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Append with a stalled output = %v, want ErrUnavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Append still blocked 10s after its 100ms deadline")
	}
}
