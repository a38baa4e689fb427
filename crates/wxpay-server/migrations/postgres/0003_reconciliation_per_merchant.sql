-- A reconciliation belongs to a merchant: its bill and its orders. Rows made before are the
-- first merchant's (`mchid` '' until the server adopts them at start).
ALTER TABLE bill_reconciliations ADD COLUMN mchid TEXT NOT NULL DEFAULT '';
ALTER TABLE bill_reconciliations DROP CONSTRAINT bill_reconciliations_pkey;
ALTER TABLE bill_reconciliations ADD PRIMARY KEY (mchid, bill_date);
CREATE INDEX orders_mchid_paid_at ON orders (mchid, paid_at);
