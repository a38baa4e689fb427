-- The whole schema of the merchant server (SQLite). Money is integer fen, times are Unix
-- milliseconds, flags are 0/1 integers: the same types as the PostgreSQL schema, so that one set
-- of queries serves both.

CREATE TABLE products (
    sku          TEXT    PRIMARY KEY NOT NULL CHECK (length(sku) BETWEEN 1 AND 32),
    name         TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    description  TEXT    NOT NULL DEFAULT '',
    price_fen    INTEGER NOT NULL CHECK (price_fen > 0),
    active       INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE users (
    openid         TEXT    PRIMARY KEY NOT NULL,
    appid          TEXT    NOT NULL,
    unionid        TEXT,
    created_at     INTEGER NOT NULL,
    last_login_at  INTEGER NOT NULL
);

-- Bearer tokens are stored as SHA-256 hex; the session_key never leaves the server.
CREATE TABLE sessions (
    token_hash   TEXT    PRIMARY KEY NOT NULL,
    openid       TEXT    NOT NULL REFERENCES users (openid) ON DELETE CASCADE,
    session_key  TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX sessions_openid ON sessions (openid);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE orders (
    out_trade_no       TEXT    PRIMARY KEY NOT NULL,
    openid             TEXT    NOT NULL,
    appid              TEXT    NOT NULL,
    mchid              TEXT    NOT NULL,
    api_version        TEXT    NOT NULL CHECK (api_version IN ('v2', 'v3')),
    source             TEXT    NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'admin')),
    description        TEXT    NOT NULL,
    items              TEXT    NOT NULL DEFAULT '[]',
    amount_fen         INTEGER NOT NULL CHECK (amount_fen > 0),
    status             TEXT    NOT NULL CHECK (status IN ('NOTPAY', 'SUCCESS', 'REFUND', 'CLOSED', 'PAYERROR')),
    client_ip          TEXT    NOT NULL,
    prepay_id          TEXT,
    prepay_created_at  INTEGER,
    transaction_id     TEXT    UNIQUE,
    payer_openid       TEXT,
    paid_at            INTEGER,
    closed_at          INTEGER,
    -- Refunds not closed (PROCESSING, SUCCESS, ABNORMAL): reserved when a refund is created, so
    -- that concurrent refunds can never add up to more than was paid.
    refunded_fen       INTEGER NOT NULL DEFAULT 0 CHECK (refunded_fen >= 0 AND refunded_fen <= amount_fen),
    expires_at         INTEGER NOT NULL,
    last_queried_at    INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    version            INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX orders_openid_created ON orders (openid, created_at);
CREATE INDEX orders_status_created ON orders (status, created_at);
CREATE INDEX orders_status_expires ON orders (status, expires_at);
CREATE INDEX orders_created ON orders (created_at, out_trade_no);

-- The timeline of an order: created, prepay, notifications (with their verification result),
-- queries, close, refunds, webhooks.
CREATE TABLE order_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    out_trade_no  TEXT    NOT NULL REFERENCES orders (out_trade_no) ON DELETE CASCADE,
    kind          TEXT    NOT NULL,
    detail        TEXT    NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL
);
CREATE INDEX order_events_order ON order_events (out_trade_no, id);

-- One row per notification (and per state-changing query result) that was applied: the same
-- notification delivered twice, or concurrently, finds its row and changes nothing.
CREATE TABLE processed_notifications (
    dedupe_key    TEXT    PRIMARY KEY NOT NULL,
    kind          TEXT    NOT NULL,
    out_trade_no  TEXT    NOT NULL,
    received_at   INTEGER NOT NULL
);

CREATE TABLE refunds (
    out_refund_no  TEXT    PRIMARY KEY NOT NULL,
    out_trade_no   TEXT    NOT NULL REFERENCES orders (out_trade_no),
    api_version    TEXT    NOT NULL CHECK (api_version IN ('v2', 'v3')),
    amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
    reason         TEXT,
    status         TEXT    NOT NULL CHECK (status IN ('PROCESSING', 'SUCCESS', 'CLOSED', 'ABNORMAL')),
    refund_id      TEXT,
    -- NULL until WeChat accepted the refund: a row left NULL by a crash is sent again with the
    -- same out_refund_no, which WeChat treats as the same refund.
    submitted_at   INTEGER,
    success_at     INTEGER,
    last_error     TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    version        INTEGER NOT NULL DEFAULT 0,
    lease_owner    TEXT,
    lease_until    INTEGER
);
CREATE INDEX refunds_order ON refunds (out_trade_no);
CREATE INDEX refunds_status_updated ON refunds (status, updated_at);

-- Merchant webhooks, written in the same transaction as the state change they announce.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT    NOT NULL UNIQUE,
    event_type       TEXT    NOT NULL,
    dedupe_key       TEXT    NOT NULL UNIQUE,
    out_trade_no     TEXT,
    payload          TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    delivered_at     INTEGER,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_until      INTEGER
);
CREATE INDEX outbox_pending ON outbox (delivered_at, next_attempt_at);

-- Singleton jobs (daily bill, certificate refresh): who runs it, until when, and how it went.
CREATE TABLE job_leases (
    name          TEXT    PRIMARY KEY NOT NULL,
    lease_owner   TEXT,
    lease_until   INTEGER,
    last_run_at   INTEGER,
    last_outcome  TEXT
);

CREATE TABLE bill_reconciliations (
    bill_date     TEXT    PRIMARY KEY NOT NULL,
    api_version   TEXT    NOT NULL CHECK (api_version IN ('v2', 'v3')),
    status        TEXT    NOT NULL,
    bill_rows     INTEGER NOT NULL DEFAULT 0,
    matched       INTEGER NOT NULL DEFAULT 0,
    mismatched    INTEGER NOT NULL DEFAULT 0,
    report        TEXT    NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
