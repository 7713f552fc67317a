-- 002: accounts. Users sign in with a password (argon2id) and get a session: an access
-- token (JWT naming the session) plus a refresh token that rotates on every use. API keys
-- are long-lived credentials of a user. Only digests of tokens and keys are stored.
CREATE TABLE users (
    id            text PRIMARY KEY,
    email         text NOT NULL,
    username      text,
    first_name    text,
    last_name     text,
    name          text,
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    is_active     boolean NOT NULL DEFAULT true,
    password_hash text NOT NULL,
    preferences   jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- one account per address and per username, whatever their case
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));
CREATE UNIQUE INDEX users_username_lower ON users (lower(username)) WHERE username IS NOT NULL;

-- A session is one sign-in: the family of every refresh token rotated from its first.
-- Revoking it (logout, reuse of a rotated refresh token, user deleted or demoted) ends
-- its access tokens too (they carry its id as `sid`).
CREATE TABLE sessions (
    id          text PRIMARY KEY,
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    revoke_reason text
);
CREATE INDEX sessions_user ON sessions (user_id) WHERE revoked_at IS NULL;

-- Refresh tokens by SHA-256 digest. used_at is set when one is rotated: presenting it
-- again is a reuse, which revokes the session.
CREATE TABLE refresh_tokens (
    token_hash  text PRIMARY KEY,
    session_id  text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    user_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text,
    prefix       text NOT NULL,
    key_hash     text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id, created_at DESC);
