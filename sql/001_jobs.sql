-- 001: the job archive. Terminal jobs are copied here by the scheduler (upsert by id) and
-- then expire from Redis; GET /v1/jobs/{id} and listings fall back to this table.
CREATE TABLE jobs (
    id               text PRIMARY KEY,
    type             text NOT NULL,
    queue            text NOT NULL,
    owner            text NOT NULL,
    status           text NOT NULL
                     CHECK (status IN ('queued', 'scheduled', 'running', 'succeeded',
                                       'failed', 'dead', 'canceled')),
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    priority         smallint NOT NULL DEFAULT 5,
    timeout_ms       integer NOT NULL DEFAULT 0,
    input            jsonb,
    result           jsonb,
    error            jsonb,
    history          jsonb,
    progress         smallint NOT NULL DEFAULT 0,
    progress_message text,
    idempotency_key  text,
    run_at           timestamptz,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL,
    archived_at      timestamptz NOT NULL DEFAULT now()
);

-- listings: an owner's jobs newest first, optionally by status or type
CREATE INDEX jobs_owner_created ON jobs (owner, created_at DESC, id DESC);
CREATE INDEX jobs_owner_status_created ON jobs (owner, status, created_at DESC, id DESC);
