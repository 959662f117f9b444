-- Billing schema v1. Times are unix seconds (BIGINT). Kept to SQL that SQLite and
-- PostgreSQL both accept where that is cheap; the PostgreSQL issue adds its own copy
-- where types must differ (AUTOINCREMENT vs identity columns, BLOB vs BYTEA).

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL DEFAULT 'user',
    banned        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE games (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    slug          TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    -- JSON array of destination strings, e.g. ["203.0.113.0/24:27015-27030"].
    destinations  TEXT NOT NULL,
    -- JSON array of executable names used for auto-detection.
    process_names TEXT NOT NULL
);

-- Ed25519 keys that sign session tickets. A key stays published in /v1/mesh until every
-- ticket it signed has expired (retired_at + ticket TTL), so rotation never strands a session.
CREATE TABLE signing_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    secret     BLOB   NOT NULL,
    public     BLOB   NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

-- The mesh CA (a single row) and other generated secrets (JWT key).
CREATE TABLE mesh_ca (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    cert_pem   TEXT   NOT NULL,
    key_pem    TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    -- Random nonzero u64, stored bit-cast to a signed 64-bit integer.
    id         BIGINT  PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    game_id    INTEGER NOT NULL REFERENCES games (id),
    key_id     INTEGER NOT NULL REFERENCES signing_keys (id),
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX sessions_account ON sessions (account_id, created_at);

-- Single-use node join tokens; only the SHA-256 of the token is stored.
CREATE TABLE join_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    node_id    TEXT
);

CREATE TABLE nodes (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    region       TEXT    NOT NULL,
    server_name  TEXT    NOT NULL UNIQUE,
    -- SHA-256 of the node secret (the secret is 256 random bits, so a fast hash suffices).
    secret_hash  TEXT    NOT NULL UNIQUE,
    cert_pem     TEXT    NOT NULL,
    enabled      BOOLEAN NOT NULL DEFAULT TRUE,
    priority     INTEGER NOT NULL DEFAULT 100,
    control_addr TEXT,
    data_addr    TEXT,
    last_seen    BIGINT,
    created_at   BIGINT  NOT NULL
);
CREATE INDEX nodes_last_seen ON nodes (last_seen);
