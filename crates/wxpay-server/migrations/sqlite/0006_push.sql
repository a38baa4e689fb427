-- Message push (消息推送) of each mini program: its Token and EncodingAESKey as one value sealed
-- under the master key (bound to the appid), NULL until set.
ALTER TABLE mini_programs ADD COLUMN push_settings TEXT;

-- Every push applied, by its dedupe key: a repeat changes nothing.
CREATE TABLE processed_pushes (
    dedupe_key    TEXT    PRIMARY KEY NOT NULL,
    appid         TEXT    NOT NULL,
    event         TEXT    NOT NULL,
    out_trade_no  TEXT,
    received_at   BIGINT  NOT NULL
);

-- What a person must see (e.g. WeChat restricting a mini program's payments), until acknowledged.
CREATE TABLE alerts (
    id               TEXT    PRIMARY KEY NOT NULL,
    kind             TEXT    NOT NULL,
    appid            TEXT,
    message          TEXT    NOT NULL,
    dedupe_key       TEXT    NOT NULL UNIQUE,
    created_at       BIGINT  NOT NULL,
    acknowledged_at  BIGINT
);

CREATE INDEX alerts_open ON alerts (acknowledged_at, created_at);

-- When WeChat was last asked for the order's trade-management state (the reconcile job).
ALTER TABLE orders ADD COLUMN trade_checked_at BIGINT;
