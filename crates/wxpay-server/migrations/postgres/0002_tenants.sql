-- The registry of merchants and mini programs (PostgreSQL; the SQLite file is the same schema).
-- Secrets are stored sealed (AES-256-GCM under WXPAY_MASTER_KEY, see src/sealing.rs) in
-- `credentials` and `app_secret`; a merchant or mini program of the merchant file
-- (source 'file') keeps its secrets in its files, and those columns are NULL.

CREATE TABLE merchants (
    mchid                    TEXT    PRIMARY KEY NOT NULL CHECK (char_length(mchid) BETWEEN 1 AND 32),
    name                     TEXT    NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    kind                     TEXT    NOT NULL CHECK (kind IN ('direct', 'provider')),
    api_version              TEXT    NOT NULL CHECK (api_version IN ('v2', 'v3')),
    enabled                  BIGINT  NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    merchant_serial          TEXT    NOT NULL,
    wechatpay_public_key_id  TEXT,
    has_platform_cert        BIGINT  NOT NULL DEFAULT 0 CHECK (has_platform_cert IN (0, 1)),
    has_p12                  BIGINT  NOT NULL DEFAULT 0 CHECK (has_p12 IN (0, 1)),
    source                   TEXT    NOT NULL CHECK (source IN ('file', 'registered')),
    credentials              TEXT,
    created_at               BIGINT  NOT NULL,
    updated_at               BIGINT  NOT NULL
);

-- The sub-merchants (特约商户) of a service provider (服务商).
CREATE TABLE sub_merchants (
    sp_mchid     TEXT    NOT NULL REFERENCES merchants (mchid),
    sub_mchid    TEXT    NOT NULL CHECK (char_length(sub_mchid) BETWEEN 1 AND 32),
    name         TEXT    NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    sub_appid    TEXT,
    enabled      BIGINT  NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    PRIMARY KEY (sp_mchid, sub_mchid)
);

CREATE TABLE mini_programs (
    appid        TEXT    PRIMARY KEY NOT NULL CHECK (char_length(appid) BETWEEN 1 AND 32),
    name         TEXT    NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    mchid        TEXT    NOT NULL REFERENCES merchants (mchid),
    sub_mchid    TEXT,
    enabled      BIGINT  NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    app_secret   TEXT,
    source       TEXT    NOT NULL CHECK (source IN ('file', 'registered')),
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);

CREATE INDEX mini_programs_by_merchant ON mini_programs (mchid);

-- The merchants' own back-office users; tokens are stored as SHA-256 hex.
CREATE TABLE operators (
    id           TEXT    PRIMARY KEY NOT NULL,
    mchid        TEXT    NOT NULL REFERENCES merchants (mchid),
    name         TEXT    NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   BIGINT  NOT NULL,
    revoked_at   BIGINT 
);

CREATE INDEX operators_by_merchant ON operators (mchid);

-- One row: raised by every change of the tables above, so that an instance sees a change with
-- one cheap read (and PostgreSQL's NOTIFY 'registry' says it at once).
CREATE TABLE registry_version (
    id           BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    version      BIGINT  NOT NULL,
    changed_at   BIGINT  NOT NULL
);

INSERT INTO registry_version (id, version, changed_at) VALUES (1, 0, 0);
