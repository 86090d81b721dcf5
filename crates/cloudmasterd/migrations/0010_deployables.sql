-- Deployables (issue 11, seed 001): declared groups of assemblies kept
-- healthy by the policy engine. The store is the engine's only truth: a
-- DPE rebuilds its view from these rows before every decision, and every
-- destructive action is one transaction on a slot guarded by its
-- incarnation (compare and swap), so a restarted master repeats none.

CREATE TABLE deployables (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    uuid TEXT,
    -- The spec generation in force (1 at the first apply, +1 per change).
    generation INTEGER NOT NULL,
    state TEXT NOT NULL,
    state_reason TEXT,
    -- The generation the rollout in progress (or stopped) started from.
    rollout_from INTEGER,
    frozen_since INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Every spec ever applied, normalised (JSON of cm_api::deploy) and as sent.
CREATE TABLE deployable_specs (
    deployable_id TEXT NOT NULL REFERENCES deployables(id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    spec TEXT NOT NULL,
    format TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (deployable_id, generation)
);

-- One row per instance place of an assembly (`web-2`).
CREATE TABLE deployable_slots (
    deployable_id TEXT NOT NULL REFERENCES deployables(id) ON DELETE CASCADE,
    assembly TEXT NOT NULL,
    idx INTEGER NOT NULL,
    -- The one current instance, and how many the slot has had: the CAS anchor.
    instance_id TEXT,
    incarnation INTEGER NOT NULL DEFAULT 0,
    spec_generation INTEGER NOT NULL,
    config_version INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    state_since INTEGER NOT NULL,
    reason TEXT,
    -- At most one destructive action at a time, with its deadline.
    action TEXT,
    action_started_at INTEGER,
    action_deadline INTEGER,
    -- Back-off: nothing destructive before this time.
    next_action_at INTEGER,
    backoff_step INTEGER NOT NULL DEFAULT 0,
    -- Failure times per budget key, JSON {"svc:httpd": [ms...], "assembly": [...], "replace": [...]}.
    windows TEXT NOT NULL DEFAULT '{}',
    -- Services moved here from a failed slot (JSON list; NULL: the spec's own).
    services TEXT,
    -- Old instances of this slot being drained and deleted (JSON list of ids).
    retiring TEXT NOT NULL DEFAULT '[]',
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (deployable_id, assembly, idx)
);

-- Balancer members the engine put in (intent, so a restarted DPE finishes
-- a half-done drain).
CREATE TABLE pool_members (
    deployable_id TEXT NOT NULL,
    balancer TEXT NOT NULL,
    backend TEXT NOT NULL,
    server TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    addr TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (balancer, backend, server)
);

-- An instance a deployable owns (NULL: a user's own), its slot, its
-- heartbeat policy (JSON of cm_api::agent::HealthPolicy) and the host's
-- judgement of its heartbeats.
ALTER TABLE instances ADD COLUMN deployable_id TEXT;
ALTER TABLE instances ADD COLUMN slot TEXT;
ALTER TABLE instances ADD COLUMN health TEXT;
ALTER TABLE instances ADD COLUMN guest_liveness TEXT;
CREATE INDEX instances_deployable ON instances(deployable_id) WHERE deployable_id IS NOT NULL;

-- The engine's events carry their structured part (cm_api::event::EventDetail).
ALTER TABLE events ADD COLUMN deployable TEXT;
ALTER TABLE events ADD COLUMN generation INTEGER;
ALTER TABLE events ADD COLUMN object TEXT;
ALTER TABLE events ADD COLUMN from_state TEXT;
ALTER TABLE events ADD COLUMN to_state TEXT;
ALTER TABLE events ADD COLUMN reason TEXT;
ALTER TABLE events ADD COLUMN action TEXT;
ALTER TABLE events ADD COLUMN counters TEXT;
CREATE INDEX events_deployable ON events(deployable, seq) WHERE deployable IS NOT NULL;
