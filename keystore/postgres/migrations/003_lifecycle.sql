-- 003_lifecycle: rotation settings, staged primaries, destruction times and
-- encryption counts.
--
-- Additive, as 001 explains: every new column has a default, so a replica
-- of the previous release keeps inserting keys and versions, and the
-- constraints hold for every existing row.
--
-- Durations are bigint nanoseconds, exactly Go's time.Duration (an interval
-- has only microseconds, and months that no Duration can hold). Times are
-- passed in by the caller, whose clock the tests control; only the created
-- columns take the database's now().

-- rotation_period is how often the key rotates on schedule, 0 for never;
-- next_rotation_time is when the next rotation is due, NULL for none.
ALTER TABLE keys ADD COLUMN rotation_period bigint NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN next_rotation_time timestamptz;
-- destroy_delay is how long a version waits in DESTROY_SCHEDULED (default
-- 30 days); publish_lead is how long a new signing version is published
-- before it becomes primary (default 10 minutes).
ALTER TABLE keys ADD COLUMN destroy_delay bigint NOT NULL DEFAULT 2592000000000000;
ALTER TABLE keys ADD COLUMN publish_lead bigint NOT NULL DEFAULT 600000000000;
-- staged_primary is a version that becomes primary at promote_time, 0 (and
-- promote_time NULL) when none is staged. It is always higher than
-- primary_version when set, but the constraint below cannot say so without
-- refusing the previous release's CommitVersion, which does not clear it.
ALTER TABLE keys ADD COLUMN staged_primary integer NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN promote_time timestamptz;

ALTER TABLE keys ADD CONSTRAINT keys_rotation_period_check CHECK (rotation_period >= 0);
ALTER TABLE keys ADD CONSTRAINT keys_destroy_delay_check CHECK (destroy_delay >= 0);
ALTER TABLE keys ADD CONSTRAINT keys_publish_lead_check CHECK (publish_lead >= 0);
ALTER TABLE keys ADD CONSTRAINT keys_staged_primary_check CHECK (
    staged_primary >= 0 AND staged_primary < next_version
    AND (staged_primary = 0) = (promote_time IS NULL)
);

-- ListDueRotations reads the keys whose rotation is due, earliest first.
CREATE INDEX keys_next_rotation_time_idx ON keys (next_rotation_time)
    WHERE next_rotation_time IS NOT NULL;
-- PromoteDue reads the keys with a staged primary.
CREATE INDEX keys_promote_time_idx ON keys (promote_time)
    WHERE promote_time IS NOT NULL;

-- destroy_time is when a DESTROY_SCHEDULED version is due for destruction,
-- or when a DESTROYED one was destroyed; encrypt_count is the number of
-- encryptions reserved for the version so far.
ALTER TABLE key_versions ADD COLUMN destroy_time timestamptz;
ALTER TABLE key_versions ADD COLUMN encrypt_count bigint NOT NULL DEFAULT 0;

ALTER TABLE key_versions ADD CONSTRAINT key_versions_encrypt_count_check CHECK (encrypt_count >= 0);

-- ListVersionsByState reads the versions in one state, oldest first: the
-- pending ones to reconcile and the ones scheduled for destruction.
CREATE INDEX key_versions_state_idx ON key_versions (state, created, key_id, version);
