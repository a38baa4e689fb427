-- Fulfilment (小程序发货信息管理服务): WeChat holds a managed mini program's payments until the
-- shipping information of each one is uploaded and the buyer confirms receipt.
--
-- How a product is delivered; an order's delivery is fixed at creation from its lines (express
-- if any line is express, else same_city if any is, else pickup if any is, else virtual).
ALTER TABLE products ADD COLUMN delivery TEXT NOT NULL DEFAULT 'express' CHECK (delivery IN ('express', 'same_city', 'virtual', 'pickup'));
ALTER TABLE orders ADD COLUMN delivery TEXT CHECK (delivery IN ('express', 'same_city', 'virtual', 'pickup'));
-- NULL until paid. awaiting_shipment, partially_shipped and shipped are written by the shipments
-- (and the upload of virtual and pickup orders); received and settled by WeChat's message push.
ALTER TABLE orders ADD COLUMN shipping_state TEXT CHECK (shipping_state IN ('awaiting_shipment', 'partially_shipped', 'shipped', 'received', 'settled'));
ALTER TABLE orders ADD COLUMN shipped_at INTEGER;
ALTER TABLE orders ADD COLUMN received_at INTEGER;
ALTER TABLE orders ADD COLUMN settled_at INTEGER;
-- Every order made before was priced from a catalog of express products.
UPDATE orders SET delivery = 'express';
CREATE INDEX orders_shipping_paid ON orders (shipping_state, paid_at);

-- One row per parcel of an express or same-city order.
CREATE TABLE shipments (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    out_trade_no      TEXT    NOT NULL REFERENCES orders (out_trade_no) ON DELETE CASCADE,
    express_company   TEXT    NOT NULL,
    tracking_no       TEXT    NOT NULL,
    -- [{"sku","quantity"}] of the order's lines in this parcel (empty: not said).
    items             TEXT    NOT NULL DEFAULT '[]',
    item_desc         TEXT    NOT NULL,
    receiver_contact  TEXT,
    is_last           INTEGER NOT NULL DEFAULT 0 CHECK (is_last IN (0, 1)),
    created_at        INTEGER NOT NULL
);
CREATE UNIQUE INDEX shipments_parcel ON shipments (out_trade_no, express_company, tracking_no);

-- The one upload of an order's shipping information to WeChat, written (pending) before it is
-- sent: an attempt whose answer was lost is followed by a question to WeChat (get_order), never
-- by a second upload of what WeChat already has.
CREATE TABLE shipping_uploads (
    out_trade_no     TEXT    PRIMARY KEY NOT NULL REFERENCES orders (out_trade_no) ON DELETE CASCADE,
    logistics_type   INTEGER NOT NULL CHECK (logistics_type BETWEEN 1 AND 4),
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'uploaded', 'failed')),
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
CREATE INDEX shipping_uploads_due ON shipping_uploads (status, next_attempt_at);
