package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-kms/sigil/keystore"
)

// publicKeysQuery selects the public keys of enabled versions of signing
// keys, in the order ListPublicKeys returns them; the caller appends a
// condition on the key's name, if any, after "AND".
const publicKeysQuery = `
	SELECT k.id, k.name, k.algorithm, v.version, v.public_key, v.created
	FROM keys k
	JOIN key_versions v ON v.key_id = k.id
	WHERE k.purpose = 'SIGN_VERIFY'
		AND v.state = 'ENABLED'
		AND v.public_key IS NOT NULL
		AND `

// ListPublicKeys returns the public keys of the enabled versions of the
// signing key named keyName, or of every signing key if keyName is "",
// ordered by key name (bytewise) and version. Versions committed without a
// public key are left out. An unknown keyName gives an empty list.
func (s *Store) ListPublicKeys(ctx context.Context, keyName string) ([]keystore.PublicKey, error) {
	const op = "list public keys"
	// Two statements rather than one with "$1 = '' OR ...", so that each
	// gets a plan of its own: by the name's unique index for one key.
	var (
		rows pgx.Rows
		err  error
	)
	if keyName == "" {
		rows, err = s.pool.Query(ctx, publicKeysQuery+`true
			ORDER BY k.name, v.version`)
	} else {
		rows, err = s.pool.Query(ctx, publicKeysQuery+`k.name = $1
			ORDER BY v.version`,
			keyName)
	}
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keystore.PublicKey, error) {
		var (
			pk      keystore.PublicKey
			version int32
		)
		err := row.Scan(&pk.KeyID, &pk.KeyName, &pk.Algorithm, &version, &pk.DER, &pk.CreateTime)
		pk.Version = uint32(version)
		return pk, err
	})
	if err != nil {
		return nil, translate(ctx, op, err)
	}
	return keys, nil
}
