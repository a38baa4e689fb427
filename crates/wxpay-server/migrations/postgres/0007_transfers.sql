-- Merchant transfers (商家转账, the 2025 version): one row per transfer bill, written (with its
-- amount reserved in the merchant's day budget and the user's day cap, in the same transaction)
-- before WeChat is asked, and sent with the same out_bill_no until WeChat has it.
-- `status` is WeChat's state; ACCEPTED also covers "not yet answered by WeChat".
CREATE TABLE transfers (
    out_bill_no       TEXT    PRIMARY KEY NOT NULL,
    mchid             TEXT    NOT NULL,
    appid             TEXT    NOT NULL,
    openid            TEXT    NOT NULL,
    amount_fen        BIGINT  NOT NULL CHECK (amount_fen > 0),
    scene_id          TEXT    NOT NULL,
    report_infos      TEXT    NOT NULL,
    perception        TEXT,
    remark            TEXT    NOT NULL,
    reason            TEXT    NOT NULL,
    -- Where WeChat notifies its final state: fixed at creation, so that every send is the same.
    notify_url        TEXT    NOT NULL,
    -- The payee's name, encrypted for WeChat (RSA-OAEP under WeChat Pay's key, which only WeChat
    -- can open) and the id of that key: resent unchanged.
    user_name_cipher  TEXT,
    user_name_serial  TEXT,
    status            TEXT    NOT NULL CHECK (status IN ('ACCEPTED', 'PROCESSING', 'WAIT_USER_CONFIRM', 'TRANSFERING', 'SUCCESS', 'FAIL', 'CANCELING', 'CANCELLED')),
    transfer_bill_no  TEXT,
    package_info      TEXT,
    fail_reason       TEXT,
    operator          TEXT    NOT NULL,
    day               TEXT    NOT NULL,
    attempts          BIGINT  NOT NULL DEFAULT 0,
    last_error        TEXT,
    next_check_at     BIGINT  NOT NULL,
    lease_owner       TEXT,
    lease_until       BIGINT,
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL,
    finished_at       BIGINT,
    version           BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX transfers_user ON transfers (appid, openid, created_at);
CREATE INDEX transfers_due ON transfers (status, next_check_at);
CREATE INDEX transfers_created ON transfers (created_at);

-- A transfer's timeline (who made it, what WeChat said, each notification).
CREATE TABLE transfer_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    out_bill_no  TEXT    NOT NULL REFERENCES transfers (out_bill_no),
    kind         TEXT    NOT NULL,
    detail       TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL
);
CREATE INDEX transfer_events_bill ON transfer_events (out_bill_no, id);

-- What each merchant has reserved per day (GMT+8) and each user received per day: guarded
-- increments, released when a transfer fails or is cancelled.
CREATE TABLE transfer_budget_days (
    mchid         TEXT    NOT NULL,
    day           TEXT    NOT NULL,
    reserved_fen  BIGINT  NOT NULL,
    PRIMARY KEY (mchid, day)
);
CREATE TABLE transfer_user_days (
    appid         TEXT    NOT NULL,
    openid        TEXT    NOT NULL,
    day           TEXT    NOT NULL,
    reserved_fen  BIGINT  NOT NULL,
    PRIMARY KEY (appid, openid, day)
);

-- A merchant's own limits (else the configured defaults).
CREATE TABLE transfer_limits (
    mchid               TEXT    PRIMARY KEY NOT NULL,
    daily_budget_fen    BIGINT  NOT NULL CHECK (daily_budget_fen >= 0),
    user_daily_cap_fen  BIGINT  NOT NULL CHECK (user_daily_cap_fen >= 0),
    updated_at          BIGINT  NOT NULL
);
