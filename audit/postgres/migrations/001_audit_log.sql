-- 001_audit_log: the hash-chained audit log.
--
-- The audit log has its own migrations, recorded in sigil_audit_schema_version,
-- so that it evolves independently of the key tables. Migrations must stay
-- additive; never edit one that has shipped.

-- audit_log holds one row per request. Rows are only ever inserted, in
-- batches, each by one transaction holding the chain's advisory lock; seq
-- runs from 1 without gaps, and hash = SHA-256 of the canonical encoding of
-- the row's other columns (see package audit), prev_hash the hash of the row
-- before. Text never contains NUL or invalid UTF-8 (package audit normalizes
-- it), so what is read back hashes to what was written.
CREATE TABLE audit_log (
    seq         bigint      NOT NULL,
    "time"      timestamptz NOT NULL,
    request_id  text        NOT NULL,
    identity    text        NOT NULL,
    rpc         text        NOT NULL,
    "key"       text        NOT NULL,
    key_version bigint      NOT NULL,
    outcome     text        NOT NULL,
    peer        text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}',
    prev_hash   bytea       NOT NULL,
    hash        bytea       NOT NULL,

    CONSTRAINT audit_log_pkey PRIMARY KEY (seq),
    CONSTRAINT audit_log_seq_check CHECK (seq > 0),
    CONSTRAINT audit_log_key_version_check CHECK (key_version BETWEEN 0 AND 4294967295),
    CONSTRAINT audit_log_details_check CHECK (jsonb_typeof(details) = 'object'),
    CONSTRAINT audit_log_prev_hash_check CHECK (octet_length(prev_hash) = 32),
    CONSTRAINT audit_log_hash_check CHECK (octet_length(hash) = 32)
);

-- Audits ask "what happened between these times" and "who used this key".
CREATE INDEX audit_log_time_idx ON audit_log ("time");
CREATE INDEX audit_log_key_time_idx ON audit_log ("key", "time");
