-- Service-provider (服务商) mode: a provider pays for its sub-merchants with its own keys under
-- its own appid (`sp_appid`); an order paid through a sub-merchant keeps which one.
ALTER TABLE merchants ADD COLUMN sp_appid TEXT;
ALTER TABLE orders ADD COLUMN sub_mchid TEXT;
