-- An upload of shipping information that is not needed: WeChat said (is_trade_managed) that the
-- order's mini program is not under trade management, so it holds none of its payments.
ALTER TABLE shipping_uploads DROP CONSTRAINT shipping_uploads_status_check;
ALTER TABLE shipping_uploads ADD CONSTRAINT shipping_uploads_status_check
    CHECK (status IN ('pending', 'uploaded', 'failed', 'not_managed'));
