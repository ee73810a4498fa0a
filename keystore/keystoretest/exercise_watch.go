package keystoretest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/keystore"
)

// notifyTimeout bounds the wait for one notification.
const notifyTimeout = 10 * time.Second

// watching is a running Watch call whose notifications a test reads.
type watching struct {
	ids    chan [16]byte
	cancel context.CancelFunc
	done   chan struct{} // closed when Watch has returned
	err    error         // Watch's result, once done is closed
}

// startWatch runs s.Watch until the test ends and waits for its first call,
// with the zero ID.
func startWatch(t *testing.T, s keystore.Store) *watching {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	w := &watching{ids: make(chan [16]byte, 1024), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.err = s.Watch(ctx, func(id [16]byte) { w.ids <- id })
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	select {
	case id := <-w.ids:
		if id != ([16]byte{}) {
			t.Fatalf("Watch first reported key %x, want the zero ID", id)
		}
	case <-w.done:
		t.Fatalf("Watch returned before reporting: %v", w.err)
	case <-time.After(notifyTimeout):
		t.Fatal("Watch did not report the zero ID")
	}
	return w
}

// expect waits for the next notification of a key and fails unless it is
// want. Zero IDs (anything may have changed) are skipped.
func (w *watching) expect(t *testing.T, what string, want [16]byte) {
	t.Helper()
	timeout := time.NewTimer(notifyTimeout)
	defer timeout.Stop()
	for {
		select {
		case id := <-w.ids:
			if id == ([16]byte{}) {
				continue
			}
			if id != want {
				t.Errorf("after %s: Watch reported key %x, want %x", what, id, want)
			}
			return
		case <-w.done:
			t.Fatalf("after %s: Watch returned: %v", what, w.err)
		case <-timeout.C:
			t.Fatalf("after %s: Watch did not report key %x within %v", what, want, notifyTimeout)
		}
	}
}

func testWatchDelivers(t *testing.T, a, b keystore.Store) {
	ctx := testContext(t)
	w := startWatch(t, a)
	k1, _ := mustCreate(t, b, "watched-1")
	w.expect(t, "CreateKey", k1.ID)
	k2, _ := mustCreate(t, b, "watched-2")
	w.expect(t, "CreateKey", k2.ID)
	mustCommit(t, b, k1.ID, 1, true)
	w.expect(t, "CommitVersion", k1.ID)
	mustCommit(t, b, k2.ID, 1, true)
	w.expect(t, "CommitVersion", k2.ID)
	v2 := mustAdd(t, b, k2.ID)
	w.expect(t, "AddVersion", k2.ID)
	mustCommit(t, b, k2.ID, v2.Version, false)
	w.expect(t, "CommitVersion", k2.ID)
	if _, err := b.UpdateKey(ctx, k1.ID, keystore.KeyUpdate{NextRotationTime: ptr(baseTime)}); err != nil {
		t.Fatal(err)
	}
	w.expect(t, "UpdateKey", k1.ID)
	if ok, err := b.ClaimRotation(ctx, k1.ID, baseTime, baseTime.Add(time.Hour)); !ok || err != nil {
		t.Fatalf("ClaimRotation = %t, %v", ok, err)
	}
	w.expect(t, "ClaimRotation", k1.ID)
	mustStage(t, b, k2.ID, v2.Version, baseTime)
	w.expect(t, "StagePrimary", k2.ID)
	if keys, err := b.PromoteDue(ctx, baseTime); err != nil || len(keys) != 1 {
		t.Fatalf("PromoteDue = %v, %v", keys, err)
	}
	w.expect(t, "PromoteDue", k2.ID)
	mustTransition(t, b, k2.ID, 1, keystore.StateEnabled, keystore.StateDisabled)
	w.expect(t, "SetVersionState", k2.ID)
	v3 := mustAdd(t, b, k1.ID)
	w.expect(t, "AddVersion", k1.ID)
	if err := b.AbortVersion(ctx, k1.ID, v3.Version); err != nil {
		t.Fatal(err)
	}
	w.expect(t, "AbortVersion", k1.ID)
}

func testWatchStops(t *testing.T, a, b keystore.Store) {
	w := startWatch(t, a)
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(notifyTimeout):
		t.Fatal("Watch did not return after its context was cancelled")
	}
	wantErr(t, "Watch after cancel", w.err, context.Canceled)
	// changed is not called once Watch has returned.
	mustCreate(t, b, "unwatched")
	select {
	case id := <-w.ids:
		t.Errorf("Watch reported key %x after it returned", id)
	default:
	}

	// A deadline ends it too.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := a.Watch(ctx, func([16]byte) {})
	wantErr(t, "Watch past its deadline", err, context.DeadlineExceeded)
}

func testRunExclusive(t *testing.T, a, b keystore.Store) {
	ctx := testContext(t)
	var (
		entered = make(chan struct{})
		release = make(chan struct{})
		done    = make(chan struct{})
		ran     bool
		err     error
		errHeld = errors.New("held job failed")
	)
	go func() {
		defer close(done)
		ran, err = a.RunExclusive(ctx, "job", func(ctx context.Context) error {
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return errHeld
		})
	}()
	select {
	case <-entered:
	case <-done:
		t.Fatalf("RunExclusive returned without running fn: %t, %v", ran, err)
	case <-ctx.Done():
		t.Fatal("RunExclusive did not run fn")
	}

	notRun := func(context.Context) error {
		t.Error("RunExclusive ran fn while another holder ran")
		return nil
	}
	for _, s := range []keystore.Store{b, a} {
		if ok, err := s.RunExclusive(ctx, "job", notRun); ok || err != nil {
			t.Errorf("RunExclusive while held = %t, %v; want false, nil", ok, err)
		}
	}
	// Other names are independent.
	otherRan := false
	if ok, err := b.RunExclusive(ctx, "other-job", func(context.Context) error { otherRan = true; return nil }); !ok || err != nil || !otherRan {
		t.Errorf("RunExclusive of another name = %t, %v (fn ran: %t); want true, nil", ok, err, otherRan)
	}

	close(release)
	<-done
	if !ran || !errors.Is(err, errHeld) {
		t.Errorf("held RunExclusive = %t, %v; want true and fn's error", ran, err)
	}
	again := false
	if ok, err := b.RunExclusive(ctx, "job", func(context.Context) error { again = true; return nil }); !ok || err != nil || !again {
		t.Errorf("RunExclusive after the holder returned = %t, %v (fn ran: %t); want true, nil", ok, err, again)
	}
}
