-- Influgen video generation: initial schema.
-- Ownership by convention: the api owns workspaces, characters, videos, idempotency keys and
-- creates jobs and reservations; the generator drives jobs; the finalizer settles credits and
-- completes videos. Every service writes events through the outbox and dedupes via the inbox.

CREATE TABLE workspaces (
    id               uuid PRIMARY KEY,
    name             text NOT NULL,
    api_key_hash     bytea NOT NULL UNIQUE,
    sandbox          boolean NOT NULL DEFAULT false,
    -- Cached sums of credit_ledger, kept in the same transactions as the ledger rows.
    credits_balance  bigint NOT NULL DEFAULT 0,   -- grants - charges
    credits_reserved bigint NOT NULL DEFAULT 0,   -- open reservations
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT available_not_negative CHECK (credits_balance - credits_reserved >= 0),
    CONSTRAINT reserved_not_negative CHECK (credits_reserved >= 0)
);

CREATE TABLE characters (
    id                  uuid PRIMARY KEY,
    workspace_id        uuid NOT NULL REFERENCES workspaces (id),
    name                text NOT NULL,
    review_mode         text NOT NULL CHECK (review_mode IN ('manual', 'autopilot')),
    reference_image_url text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX characters_workspace ON characters (workspace_id, created_at);

CREATE TABLE videos (
    id                uuid PRIMARY KEY,
    workspace_id      uuid NOT NULL REFERENCES workspaces (id),
    character_id      uuid NOT NULL REFERENCES characters (id),
    status            text NOT NULL CHECK (status IN
                          ('queued', 'generating', 'ready', 'approved', 'rejected', 'failed', 'canceled')),
    review_state      text CHECK (review_state IN ('ready', 'approved', 'rejected')),
    platform          text NOT NULL,
    type              text NOT NULL,
    scene_description text NOT NULL,
    planned_date      text,
    planned_at        timestamptz,
    caption           text,
    hashtags          text[] NOT NULL DEFAULT '{}',
    cta               text,
    duration_seconds  integer NOT NULL,
    aspect_ratio      text NOT NULL,
    model_id          text NOT NULL,
    quality_tier      text NOT NULL,
    scene_feedback    jsonb NOT NULL,
    credits_quoted    integer NOT NULL,
    credits_charged   integer,
    media             jsonb,
    request_source    text NOT NULL DEFAULT 'http',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz
);
CREATE INDEX videos_workspace_created ON videos (workspace_id, created_at DESC, id DESC);

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    video_id         uuid NOT NULL UNIQUE REFERENCES videos (id),
    workspace_id     uuid NOT NULL REFERENCES workspaces (id),
    state            text NOT NULL CHECK (state IN
                         ('queued', 'submitted', 'running', 'succeeded', 'failed', 'canceled')),
    provider         text NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    progress         integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    error            jsonb,
    -- Set by the generator when it takes the job event: the job spec it works from.
    spec             jsonb,
    accepted_at      timestamptz,
    provider_job_id  text,
    lease_owner      text,
    lease_expires_at timestamptz,
    next_attempt_at  timestamptz,
    deadline_at      timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX jobs_queued ON jobs (created_at) WHERE state = 'queued';
CREATE INDEX jobs_active ON jobs (lease_expires_at) WHERE state IN ('submitted', 'running');

-- Append-only credit ledger. amount is always positive; kind says its direction.
CREATE TABLE credit_ledger (
    id           bigserial PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    kind         text NOT NULL CHECK (kind IN ('grant', 'reserve', 'charge', 'release')),
    amount       bigint NOT NULL CHECK (amount >= 0),
    job_id       uuid,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_ledger_workspace ON credit_ledger (workspace_id, id);

-- Exactly one settlement per job, enforced here and not only in code.
CREATE TABLE settlements (
    job_id     uuid PRIMARY KEY REFERENCES jobs (id),
    outcome    text NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'canceled')),
    charged    bigint NOT NULL,
    released   bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE idempotency_keys (
    workspace_id    uuid NOT NULL REFERENCES workspaces (id),
    key             text NOT NULL,
    request_hash    bytea NOT NULL,
    video_id        uuid,
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Transactional outbox: rows are written in the same transaction as the effect and
-- published by the relay, which deletes them once Kafka has acknowledged them.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        text NOT NULL,
    event_id   uuid NOT NULL,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Inbox: one row per consumed event, written in the same transaction as its effect.
CREATE TABLE inbox (
    consumer    text NOT NULL,
    event_id    uuid NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
