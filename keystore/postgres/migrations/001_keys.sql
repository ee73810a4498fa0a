-- 001_keys: keys and their versions.
--
-- Migrations are applied in order by tern at start-up and must stay
-- additive (new tables, new nullable or defaulted columns, new constraints
-- that existing rows satisfy): a replica running the previous release keeps
-- working against a schema one migration ahead of it during a rolling
-- upgrade. Never edit a migration that has shipped; add a new one.

-- keys holds one row per named key. Names compare bytewise (COLLATE "C") so
-- that ORDER BY name, the keyset pagination of ListKeys and the unique index
-- agree with Go string order whatever the database's default collation.
CREATE TABLE keys (
    id              uuid        NOT NULL,
    name            text        COLLATE "C" NOT NULL,
    purpose         text        NOT NULL,
    algorithm       text        NOT NULL,
    -- primary_version is 0 until the first version is committed.
    primary_version integer     NOT NULL DEFAULT 0,
    -- next_version is the next version number to hand out. It only grows:
    -- a number handed to a pending version that is later aborted is never
    -- handed out again.
    next_version    integer     NOT NULL,
    labels          jsonb       NOT NULL DEFAULT '{}',
    created         timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT keys_pkey PRIMARY KEY (id),
    CONSTRAINT keys_name_key UNIQUE (name),
    -- The core validates names; this is defence in depth.
    CONSTRAINT keys_name_check CHECK (name ~ '^[a-zA-Z0-9_-]{1,63}$'),
    CONSTRAINT keys_purpose_check CHECK (purpose IN ('ENCRYPT_DECRYPT', 'SIGN_VERIFY')),
    CONSTRAINT keys_algorithm_check CHECK (algorithm <> ''),
    CONSTRAINT keys_next_version_check CHECK (next_version >= 1),
    CONSTRAINT keys_primary_version_check CHECK (primary_version >= 0 AND primary_version < next_version),
    CONSTRAINT keys_labels_check CHECK (jsonb_typeof(labels) = 'object')
);

-- key_versions holds one row per version of a key. A row never outlives its
-- key: a key is deleted only when its last (pending) version is aborted.
CREATE TABLE key_versions (
    key_id  uuid        NOT NULL,
    version integer     NOT NULL,
    state   text        NOT NULL,
    -- hsm_id is the CKA_ID of the version's HSM object.
    hsm_id  bytea       NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT key_versions_pkey PRIMARY KEY (key_id, version),
    CONSTRAINT key_versions_key_id_fkey FOREIGN KEY (key_id) REFERENCES keys (id),
    CONSTRAINT key_versions_hsm_id_key UNIQUE (hsm_id),
    CONSTRAINT key_versions_version_check CHECK (version >= 1),
    CONSTRAINT key_versions_state_check CHECK (
        state IN ('PENDING', 'ENABLED', 'DISABLED', 'DESTROY_SCHEDULED', 'DESTROYED')
    ),
    CONSTRAINT key_versions_hsm_id_check CHECK (octet_length(hsm_id) > 0)
);
