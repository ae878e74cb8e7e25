-- Spend caps: a monthly ceiling in USD on a customer or on one of its keys, set by the owner or
-- by the customer, and what each has spent per UTC month. The totals are kept in the transaction
-- that writes each bill, under a row lock, so proxies that bill at once never lose an amount;
-- a create is admitted only while every cap on its caller is above what was spent.
-- Which key created each prediction, and so each bill: a key's cap counts its own.
ALTER TABLE predictions ADD COLUMN key_id TEXT;
ALTER TABLE billed_usage ADD COLUMN key_id TEXT;
CREATE INDEX billed_usage_by_customer_time ON billed_usage (stripe_customer, created_at);
CREATE INDEX billed_usage_by_key_time ON billed_usage (key_id, created_at);
CREATE TABLE spend_caps (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    set_by TEXT NOT NULL,
    monthly TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (scope, subject, set_by)
);
CREATE TABLE spend_totals (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    period TEXT NOT NULL,
    amount TEXT NOT NULL,
    PRIMARY KEY (scope, subject, period)
);
