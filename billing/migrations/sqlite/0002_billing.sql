-- Billing schema v2 (SQLite): plans, subscriptions, refresh tokens, payments, promo codes,
-- session usage, admin-editable games. Must end in the same shape as
-- migrations/postgres/0001_init.sql.
--
-- Flags are INTEGER 0/1, never BOOLEAN: sqlx's `Any` driver cannot read a column declared
-- BOOLEAN from SQLite, so v1's two BOOLEAN columns are rebuilt here. The migration runs
-- with foreign_keys OFF (see db.rs), which is what SQLite's documented table-rebuild
-- procedure asks for; db.rs runs `PRAGMA foreign_key_check` afterwards.

CREATE TABLE accounts_v2 (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    email              TEXT    NOT NULL UNIQUE,
    password_hash      TEXT    NOT NULL,
    role               TEXT    NOT NULL DEFAULT 'user',
    banned             INTEGER NOT NULL DEFAULT 0,
    created_at         BIGINT  NOT NULL,
    trial_used_at      BIGINT,
    tokens_valid_after BIGINT  NOT NULL DEFAULT 0,
    lock_seq           BIGINT  NOT NULL DEFAULT 0
);
INSERT INTO accounts_v2 (id, email, password_hash, role, banned, created_at)
    SELECT id, email, password_hash, role, CASE WHEN banned THEN 1 ELSE 0 END, created_at
    FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_v2 RENAME TO accounts;
CREATE INDEX accounts_created ON accounts (created_at);

CREATE TABLE nodes_v2 (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    region       TEXT    NOT NULL,
    server_name  TEXT    NOT NULL UNIQUE,
    secret_hash  TEXT    NOT NULL UNIQUE,
    cert_pem     TEXT    NOT NULL,
    enabled      INTEGER NOT NULL DEFAULT 1,
    priority     BIGINT  NOT NULL DEFAULT 100,
    control_addr TEXT,
    data_addr    TEXT,
    last_seen    BIGINT,
    created_at   BIGINT  NOT NULL,
    deleted_at   BIGINT
);
INSERT INTO nodes_v2 (id, name, region, server_name, secret_hash, cert_pem, enabled, priority,
                      control_addr, data_addr, last_seen, created_at)
    SELECT id, name, region, server_name, secret_hash, cert_pem,
           CASE WHEN enabled THEN 1 ELSE 0 END, priority, control_addr, data_addr, last_seen,
           created_at
    FROM nodes;
DROP TABLE nodes;
ALTER TABLE nodes_v2 RENAME TO nodes;
CREATE INDEX nodes_last_seen ON nodes (last_seen);

ALTER TABLE games ADD COLUMN category TEXT;
ALTER TABLE games ADD COLUMN regions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE games ADD COLUMN admin_edited INTEGER NOT NULL DEFAULT 0;
ALTER TABLE games ADD COLUMN deleted_at BIGINT;

ALTER TABLE sessions ADD COLUMN plan TEXT;
ALTER TABLE sessions ADD COLUMN ended_at BIGINT;
ALTER TABLE sessions ADD COLUMN end_reason TEXT;
ALTER TABLE sessions ADD COLUMN node_id TEXT;
ALTER TABLE sessions ADD COLUMN bytes_up BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN bytes_down BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN loss REAL;
ALTER TABLE sessions ADD COLUMN rtt_ms REAL;
ALTER TABLE sessions ADD COLUMN last_report_at BIGINT;
CREATE INDEX sessions_open ON sessions (account_id, ended_at, expires_at);
CREATE INDEX sessions_created ON sessions (created_at);

ALTER TABLE join_tokens ADD COLUMN note TEXT;

-- One row per account that ever had a plan. Status is derived from the times:
-- active (period_end > now, not cancelled), cancelled (cancelled_at set, still running
-- until period_end), expired (period_end <= now).
CREATE TABLE subscriptions (
    account_id   INTEGER PRIMARY KEY REFERENCES accounts (id),
    plan         TEXT    NOT NULL,
    started_at   BIGINT  NOT NULL,
    period_end   BIGINT  NOT NULL,
    cancelled_at BIGINT,
    updated_at   BIGINT  NOT NULL
);
CREATE INDEX subscriptions_end ON subscriptions (period_end);

-- Ledger of every change to a subscription (trial, payment, promo, admin grant, cancel).
CREATE TABLE subscription_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    kind       TEXT    NOT NULL,
    plan       TEXT    NOT NULL,
    seconds    BIGINT  NOT NULL,
    period_end BIGINT  NOT NULL,
    reference  TEXT,
    created_at BIGINT  NOT NULL
);
CREATE INDEX subscription_events_account ON subscription_events (account_id, id);

-- A refresh-token family: one login on one device. Revoking it logs that device out
-- (its access tokens carry the family id as `sid` and stop working at once).
CREATE TABLE auth_families (
    id         TEXT    PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    created_at BIGINT  NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX auth_families_account ON auth_families (account_id);

-- Refresh tokens, stored only as SHA-256 hashes (256 random bits each).
CREATE TABLE refresh_tokens (
    token_hash TEXT    PRIMARY KEY,
    family_id  TEXT    NOT NULL REFERENCES auth_families (id),
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE promo_codes (
    code       TEXT    PRIMARY KEY,
    days       BIGINT  NOT NULL,
    max_uses   BIGINT  NOT NULL,
    uses       BIGINT  NOT NULL DEFAULT 0,
    expires_at BIGINT,
    disabled   INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT  NOT NULL
);

CREATE TABLE promo_redemptions (
    code       TEXT    NOT NULL REFERENCES promo_codes (code),
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (code, account_id)
);

CREATE TABLE payments (
    id                TEXT    PRIMARY KEY,
    account_id        INTEGER NOT NULL REFERENCES accounts (id),
    provider          TEXT    NOT NULL,
    plan              TEXT    NOT NULL,
    amount_cents      BIGINT  NOT NULL,
    currency          TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    provider_txn_id   TEXT,
    paid_amount_cents BIGINT,
    paid_currency     TEXT,
    flag_reason       TEXT,
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL
);
CREATE INDEX payments_account ON payments (account_id, created_at);
CREATE INDEX payments_status ON payments (status, created_at);

-- Each provider transaction is processed once: this primary key is the idempotency guard.
CREATE TABLE provider_transactions (
    provider   TEXT   NOT NULL,
    txn_id     TEXT   NOT NULL,
    payment_id TEXT,
    outcome    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (provider, txn_id)
);

-- Every raw notification (webhook body or polled transaction), for audit.
CREATE TABLE payment_notifications (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    provider     TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    signature_ok INTEGER NOT NULL,
    txn_id       TEXT,
    outcome      TEXT    NOT NULL,
    raw          TEXT    NOT NULL,
    received_at  BIGINT  NOT NULL
);
CREATE INDEX payment_notifications_txn ON payment_notifications (provider, txn_id);
