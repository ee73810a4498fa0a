package keystoretest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/keystoretest"
)

func TestMemory(t *testing.T) {
	keystoretest.Exercise(t, func(t *testing.T) keystore.Store {
		s := keystoretest.NewMemory()
		t.Cleanup(s.Close)
		return s
	})
}

func TestMemoryFail(t *testing.T) {
	ctx := t.Context()
	m := keystoretest.NewMemory()
	k, _, err := m.CreateKey(ctx, keystore.Key{Name: "k", Purpose: keystore.PurposeEncryptDecrypt, Algorithm: keystore.AES256GCM}, []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	outage := fmt.Errorf("injected: %w", keystore.ErrUnavailable)
	m.Fail(outage)
	calls := map[string]error{}
	_, calls["GetKey"] = m.GetKey(ctx, "k")
	_, calls["ListKeys"] = m.ListKeys(ctx, "", 10)
	_, _, calls["CreateKey"] = m.CreateKey(ctx, keystore.Key{Name: "other"}, []byte{2})
	_, calls["AddVersion"] = m.AddVersion(ctx, k.ID, []byte{3})
	_, _, calls["CommitVersion"] = m.CommitVersion(ctx, k.ID, 1, nil, true)
	calls["AbortVersion"] = m.AbortVersion(ctx, k.ID, 1)
	_, calls["GetVersion"] = m.GetVersion(ctx, k.ID, 1)
	_, calls["ListVersions"] = m.ListVersions(ctx, k.ID, 0, 10)
	_, calls["ListPublicKeys"] = m.ListPublicKeys(ctx, "")
	_, calls["UpdateKey"] = m.UpdateKey(ctx, k.ID, keystore.KeyUpdate{})
	_, calls["StagePrimary"] = m.StagePrimary(ctx, k.ID, 1, time.Now())
	_, calls["PromoteDue"] = m.PromoteDue(ctx, time.Now())
	_, calls["SetVersionState"] = m.SetVersionState(ctx, k.ID, 1, keystore.Transition{From: []keystore.State{keystore.StatePending}, To: keystore.StateEnabled})
	_, calls["ListVersionsByState"] = m.ListVersionsByState(ctx, keystore.StatePending, time.Time{}, 10)
	_, calls["ListDueRotations"] = m.ListDueRotations(ctx, time.Now(), 10)
	_, calls["ClaimRotation"] = m.ClaimRotation(ctx, k.ID, time.Now(), time.Now())
	_, calls["ReserveEncryptions"] = m.ReserveEncryptions(ctx, k.ID, 1, 1)
	calls["Watch"] = m.Watch(ctx, func([16]byte) { t.Error("Watch under Fail called changed") })
	ran, err := m.RunExclusive(ctx, "job", func(context.Context) error { t.Error("RunExclusive under Fail ran fn"); return nil })
	calls["RunExclusive"] = err
	if ran {
		t.Error("RunExclusive under Fail reported that fn ran")
	}
	calls["Ping"] = m.Ping(ctx)
	for name, err := range calls {
		if !errors.Is(err, keystore.ErrUnavailable) {
			t.Errorf("%s under Fail: error %v, want the injected one", name, err)
		}
	}

	m.Recover()
	if err := m.Ping(ctx); err != nil {
		t.Errorf("Ping after Recover: %v", err)
	}
	// Nothing changed while failing.
	if vs, err := m.ListVersions(ctx, k.ID, 0, 10); err != nil || len(vs) != 1 || vs[0].State != keystore.StatePending {
		t.Errorf("ListVersions after Recover = %v, %v; want version 1 pending", vs, err)
	}
	if _, err := m.GetKey(ctx, "other"); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("GetKey(other) after Recover: %v, want ErrNotFound", err)
	}
	if v, err := m.GetVersion(ctx, k.ID, 1); err != nil || v.EncryptCount != 0 {
		t.Errorf("GetVersion after Recover = count %d, %v; want 0", v.EncryptCount, err)
	}
}

func TestMemoryFailStopsWatch(t *testing.T) {
	m := keystoretest.NewMemory()
	listening := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		result <- m.Watch(t.Context(), func(id [16]byte) {
			if id == ([16]byte{}) {
				close(listening)
			}
		})
	}()
	<-listening
	outage := fmt.Errorf("injected: %w", keystore.ErrUnavailable)
	m.Fail(outage)
	if err := <-result; !errors.Is(err, keystore.ErrUnavailable) {
		t.Errorf("Watch after Fail: %v, want the injected error", err)
	}
	m.Recover()

	go func() { result <- m.Watch(t.Context(), func([16]byte) {}) }()
	m.Close()
	if err := <-result; err == nil {
		t.Error("Watch after Close returned nil")
	}
}

func TestMemoryWatchIsSynchronous(t *testing.T) {
	ctx := t.Context()
	m := keystoretest.NewMemory()
	var (
		got       [][16]byte
		listening = make(chan struct{})
		result    = make(chan error, 1)
	)
	wctx, cancel := context.WithCancel(ctx)
	go func() {
		result <- m.Watch(wctx, func(id [16]byte) {
			if id == ([16]byte{}) {
				close(listening)
				return
			}
			got = append(got, id) // calls never overlap
		})
	}()
	<-listening
	k, _, err := m.CreateKey(ctx, keystore.Key{Name: "k"}, []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-result
	// Delivered before CreateKey returned; Watch has returned since, so
	// reading got is safe.
	if len(got) != 1 || got[0] != k.ID {
		t.Errorf("Watch reported %x, want [%x]", got, k.ID)
	}
}

func TestMemoryClosed(t *testing.T) {
	m := keystoretest.NewMemory()
	m.Close()
	if err := m.Ping(context.Background()); err == nil {
		t.Error("Ping after Close succeeded")
	}
}
