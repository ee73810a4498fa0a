-- 002_public_keys: the public keys of signing key versions.
--
-- Additive, as 001 explains: a replica of the previous release neither
-- reads nor writes public_key, so the versions it commits have none (and
-- ListPublicKeys leaves them out) until the core fills them in.

-- public_key is the DER SubjectPublicKeyInfo of a signing version, copied
-- from the HSM when the version is committed; NULL for symmetric keys. A
-- version gets it in the same UPDATE that enables it, so a pending version
-- never has one; an empty value is stored as NULL, never as ''.
ALTER TABLE key_versions ADD COLUMN public_key bytea;

ALTER TABLE key_versions ADD CONSTRAINT key_versions_public_key_check CHECK (
    public_key IS NULL OR (state <> 'PENDING' AND octet_length(public_key) > 0)
);

-- ListPublicKeys (the JWKS) reads only enabled versions that have a public
-- key. They are few next to the symmetric and retired versions, so this
-- partial index lets it skip the rest, in the order it returns them.
CREATE INDEX key_versions_public_keys_idx ON key_versions (key_id, version)
    WHERE state = 'ENABLED' AND public_key IS NOT NULL;
