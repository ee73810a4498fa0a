package keystoretest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

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
}

func TestMemoryClosed(t *testing.T) {
	m := keystoretest.NewMemory()
	m.Close()
	if err := m.Ping(context.Background()); err == nil {
		t.Error("Ping after Close succeeded")
	}
}
