-- keyhole's schema in PostgreSQL, version 1: the vault (sealed secrets and
-- records), sessions and their config snapshots, and the audit (one hash
-- chain per replica in one table). Sealed and MAC'd values are stored as
-- the exact text that was sealed or MAC'd; the columns beside them are for
-- indexes and people, and readers check every value against its MAC.

CREATE TABLE keyhole_vault (
	id int PRIMARY KEY CHECK (id = 1),
	key_check text NOT NULL, -- sealed "keyhole vault key check v1": proves the master key
	root text NOT NULL,      -- sealed random root of the derived keys
	created timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE keyhole_secrets (
	name text PRIMARY KEY,
	version int NOT NULL,
	sealed text NOT NULL, -- AES-256-GCM, associated data "secret:" || name
	meta text NOT NULL    -- sealed metadata, associated data "meta:secret:" || name
);

CREATE TABLE keyhole_records (
	name text PRIMARY KEY,
	data text NOT NULL -- sealed, associated data "record:" || name
);

CREATE TABLE keyhole_sessions (
	id text PRIMARY KEY,
	token_hash text NOT NULL UNIQUE,
	record text NOT NULL, -- the MAC'd session record (its state included)
	state text NOT NULL,
	-- Counters shared by every broker: one atomic UPDATE per call.
	calls bigint NOT NULL DEFAULT 0,
	denials bigint NOT NULL DEFAULT 0,
	last_call timestamptz,
	created timestamptz NOT NULL
);

CREATE TABLE keyhole_session_configs (
	sha256 text PRIMARY KEY,
	body bytea NOT NULL
);

CREATE TABLE keyhole_audit (
	replica text NOT NULL,
	seq bigint NOT NULL,
	entry text NOT NULL,
	type text GENERATED ALWAYS AS (entry::jsonb ->> 'type') STORED,
	"of" bigint GENERATED ALWAYS AS ((entry::jsonb ->> 'of')::bigint) STORED,
	time text GENERATED ALWAYS AS (entry::jsonb ->> 'time') STORED,
	session text GENERATED ALWAYS AS (entry::jsonb ->> 'session') STORED,
	tool text GENERATED ALWAYS AS (entry::jsonb ->> 'tool') STORED,
	decision text GENERATED ALWAYS AS (entry::jsonb ->> 'decision') STORED,
	credential text GENERATED ALWAYS AS (entry::jsonb ->> 'credential') STORED,
	PRIMARY KEY (replica, seq)
);
CREATE INDEX keyhole_audit_session ON keyhole_audit (replica, session, seq) WHERE type <> 'outcome';
CREATE INDEX keyhole_audit_tool ON keyhole_audit (replica, tool, seq) WHERE type <> 'outcome';
CREATE INDEX keyhole_audit_time ON keyhole_audit (replica, time) WHERE type <> 'outcome';
CREATE INDEX keyhole_audit_credential ON keyhole_audit (replica, credential, seq) WHERE type <> 'outcome';
CREATE INDEX keyhole_audit_decision ON keyhole_audit (replica, decision, seq) WHERE type <> 'intent';
CREATE INDEX keyhole_audit_of ON keyhole_audit (replica, "of") WHERE "of" IS NOT NULL;

CREATE TABLE keyhole_audit_meta (
	replica text NOT NULL,
	name text NOT NULL,
	value text NOT NULL,
	PRIMARY KEY (replica, name)
);

-- Who writes each chain: a broker holds its replica's lease while it runs
-- and renews it with every batch; another broker may take an expired
-- lease to record the dead one's open intents as interrupted.
CREATE TABLE keyhole_audit_replicas (
	replica text PRIMARY KEY,
	holder text NOT NULL,
	lease_until timestamptz NOT NULL
);

-- One row per call, as audit tail shows it: an intent merged with its
-- outcome. A call whose outcome is not written reads running.
CREATE VIEW keyhole_calls AS
SELECT c.replica, c.seq, c.time, c.session,
	c.entry::jsonb ->> 'scope' AS scope,
	c.entry::jsonb ->> 'client' AS client,
	c.tool,
	c.entry::jsonb ->> 'kind' AS kind,
	c.entry::jsonb ->> 'method' AS method,
	c.entry::jsonb ->> 'host' AS host,
	c.entry::jsonb ->> 'path' AS path,
	c.entry::jsonb ->> 'bucket' AS bucket,
	c.entry::jsonb ->> 'action' AS action,
	c.entry::jsonb ->> 'key' AS "key",
	CASE WHEN c.type <> 'intent' THEN c.decision WHEN o.seq IS NULL THEN 'running' ELSE o.decision END AS decision,
	coalesce(o.entry, c.entry)::jsonb ->> 'code' AS code,
	coalesce(o.entry, c.entry)::jsonb ->> 'reason' AS reason,
	c.entry::jsonb ->> 'grant' AS "grant",
	c.credential,
	(coalesce(o.entry, c.entry)::jsonb ->> 'status')::int AS status,
	(coalesce(o.entry, c.entry)::jsonb ->> 'duration_ns')::bigint AS duration_ns,
	c.type,
	o.seq AS outcome_seq
FROM keyhole_audit c
LEFT JOIN keyhole_audit o ON o.replica = c.replica AND o."of" = c.seq AND o.type = 'outcome'
WHERE c.type <> 'outcome';

-- Renews a broker's lease on its chain; raises KH001 when another broker
-- holds it, which rolls back the batch it is part of.
CREATE FUNCTION keyhole_audit_renew(r text, h text, ttl interval) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	UPDATE keyhole_audit_replicas SET lease_until = now() + ttl WHERE replica = r AND holder = h;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'the audit chain of replica % is held by another broker', r USING ERRCODE = 'KH001';
	END IF;
END $$;
