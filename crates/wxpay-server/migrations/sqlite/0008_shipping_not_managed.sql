-- An upload of shipping information that is not needed: WeChat said (is_trade_managed) that the
-- order's mini program is not under trade management, so it holds none of its payments.
-- SQLite cannot change a CHECK constraint: the table is rebuilt (no table references it).
CREATE TABLE shipping_uploads_new (
    out_trade_no     TEXT    PRIMARY KEY NOT NULL REFERENCES orders (out_trade_no) ON DELETE CASCADE,
    logistics_type   INTEGER NOT NULL CHECK (logistics_type BETWEEN 1 AND 4),
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'uploaded', 'failed', 'not_managed')),
    -- Upload calls started (an attempt is counted before it is sent).
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until      INTEGER,
    uploaded_at      INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
INSERT INTO shipping_uploads_new (out_trade_no, logistics_type, status, attempts, last_error,
    next_attempt_at, lease_owner, lease_until, uploaded_at, created_at, updated_at)
    SELECT out_trade_no, logistics_type, status, attempts, last_error, next_attempt_at,
    lease_owner, lease_until, uploaded_at, created_at, updated_at FROM shipping_uploads;
DROP TABLE shipping_uploads;
ALTER TABLE shipping_uploads_new RENAME TO shipping_uploads;
CREATE INDEX shipping_uploads_due ON shipping_uploads (status, next_attempt_at);
