-- A reconciliation belongs to a merchant: its bill and its orders. Rows made before are the
-- first merchant's (`mchid` '' until the server adopts them at start).
CREATE TABLE bill_reconciliations_new (
    bill_date     TEXT    NOT NULL,
    api_version   TEXT    NOT NULL CHECK (api_version IN ('v2', 'v3')),
    status        TEXT    NOT NULL,
    bill_rows     INTEGER NOT NULL DEFAULT 0,
    matched       INTEGER NOT NULL DEFAULT 0,
    mismatched    INTEGER NOT NULL DEFAULT 0,
    report        TEXT    NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    mchid         TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (mchid, bill_date)
);
INSERT INTO bill_reconciliations_new
    (bill_date, api_version, status, bill_rows, matched, mismatched, report, created_at, updated_at, mchid)
    SELECT bill_date, api_version, status, bill_rows, matched, mismatched, report, created_at, updated_at, ''
    FROM bill_reconciliations;
DROP TABLE bill_reconciliations;
ALTER TABLE bill_reconciliations_new RENAME TO bill_reconciliations;
CREATE INDEX orders_mchid_paid_at ON orders (mchid, paid_at);
