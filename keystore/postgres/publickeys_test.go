package postgres_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/jackc/tern/v2/migrate"

	"github.com/sigil-kms/sigil/keystore"
	"github.com/sigil-kms/sigil/keystore/postgres/postgrestest"
)

func signingKey(name string) keystore.Key {
	return keystore.Key{Name: name, Purpose: keystore.PurposeSignVerify, Algorithm: keystore.Ed25519}
}

func TestListPublicKeysOnlyEnabled(t *testing.T) {
	// The Store interface cannot disable a version yet; the schema can.
	ctx := testContext(t)
	url := postgrestest.NewDatabase(t)
	s := open(t, url)
	k, _, err := s.CreateKey(ctx, signingKey("states"), []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	states := []keystore.State{keystore.StateEnabled, keystore.StateDisabled, keystore.StateDestroyScheduled, keystore.StateDestroyed, keystore.StateEnabled}
	for i := range states {
		n := uint32(i + 1)
		if n > 1 {
			if _, err := s.AddVersion(ctx, k.ID, []byte{byte(n)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := s.CommitVersion(ctx, k.ID, n, []byte{0x30, byte(n)}, true); err != nil {
			t.Fatal(err)
		}
	}
	conn := connect(t, url)
	for i, state := range states {
		if _, err := conn.Exec(ctx, `UPDATE key_versions SET state = $3 WHERE key_id = $1 AND version = $2`,
			k.ID, i+1, string(state)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"", "states"} {
		pks, err := s.ListPublicKeys(ctx, name)
		if err != nil {
			t.Fatalf("ListPublicKeys(%q): %v", name, err)
		}
		if len(pks) != 2 || pks[0].Version != 1 || pks[1].Version != 5 || !bytes.Equal(pks[1].DER, []byte{0x30, 5}) {
			t.Errorf("ListPublicKeys(%q) = %+v, want versions 1 and 5 only", name, pks)
		}
	}
	// Retired versions keep their public key.
	if v, err := s.GetVersion(ctx, k.ID, 4); err != nil || !bytes.Equal(v.PublicKey, []byte{0x30, 4}) {
		t.Errorf("GetVersion(4) destroyed = public key %x, %v; want 3004", v.PublicKey, err)
	}
}

func TestSchemaRejectsPendingPublicKey(t *testing.T) {
	ctx := testContext(t)
	url := postgrestest.NewDatabase(t)
	s := open(t, url)
	k, _, err := s.CreateKey(ctx, signingKey("pending"), []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, url)
	for what, stmt := range map[string]string{
		"pending with a public key": `UPDATE key_versions SET public_key = '\x30' WHERE key_id = $1`,
		"empty public key":          `UPDATE key_versions SET state = 'ENABLED', public_key = '' WHERE key_id = $1`,
	} {
		if _, err := conn.Exec(ctx, stmt, k.ID); err == nil {
			t.Errorf("%s: update succeeded", what)
		}
	}
	if v, err := s.GetVersion(ctx, k.ID, 1); err != nil || v.State != keystore.StatePending || v.PublicKey != nil {
		t.Errorf("GetVersion(1) = %s, public key %x, %v; want pending without one", v.State, v.PublicKey, err)
	}
}

func TestMigrateFromFirstSchema(t *testing.T) {
	// A database that a release before public keys created and used.
	ctx := testContext(t)
	url := postgrestest.NewDatabase(t)
	conn := connect(t, url)
	m, err := migrate.NewMigrator(ctx, conn, "sigil_schema_version")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadMigrations(os.DirFS("migrations")); err != nil {
		t.Fatal(err)
	}
	if err := m.MigrateTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var id [16]byte
	id[0] = 7
	for _, stmt := range []string{`
		INSERT INTO keys (id, name, purpose, algorithm, primary_version, next_version)
		VALUES ($1, 'old', 'SIGN_VERIFY', 'ED25519', 1, 3)`, `
		INSERT INTO key_versions (key_id, version, state, hsm_id)
		VALUES ($1, 1, 'ENABLED', '\x01'), ($1, 2, 'PENDING', '\x02')`,
	} {
		if _, err := conn.Exec(ctx, stmt, id); err != nil {
			t.Fatal(err)
		}
	}

	s := open(t, url)
	if v, rows := schemaVersion(t, conn); v != migrationCount || rows != 1 {
		t.Errorf("schema version %d in %d rows, want %d in 1", v, rows, migrationCount)
	}
	v1, err := s.GetVersion(ctx, id, 1)
	if err != nil || v1.State != keystore.StateEnabled || v1.PublicKey != nil {
		t.Errorf("GetVersion(1) = %s, public key %x, %v; want enabled without one", v1.State, v1.PublicKey, err)
	}
	if pks, err := s.ListPublicKeys(ctx, ""); err != nil || len(pks) != 0 {
		t.Errorf("ListPublicKeys = %+v, %v; want none (no version has a public key yet)", pks, err)
	}
	// The pending version commits with its public key.
	if _, v2, err := s.CommitVersion(ctx, id, 2, []byte{0x30, 2}, true); err != nil || !bytes.Equal(v2.PublicKey, []byte{0x30, 2}) {
		t.Fatalf("CommitVersion(2) = public key %x, %v", v2.PublicKey, err)
	}
	pks, err := s.ListPublicKeys(ctx, "old")
	if err != nil || len(pks) != 1 || pks[0].Version != 2 || pks[0].KeyName != "old" || pks[0].Algorithm != keystore.Ed25519 {
		t.Errorf("ListPublicKeys(old) = %+v, %v; want version 2", pks, err)
	}
}
