-- What each customer's Stripe subscription pays for, mirrored from Stripe's webhooks: the
-- request path reads a key's right to a model, and the price it bills at, from here, never
-- from Stripe. One row per subscription; `stripe_time` is Stripe's time of the state applied,
-- so an older event delivered late never overwrites a newer state.
CREATE TABLE stripe_subscriptions (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    status TEXT NOT NULL,
    billing_mode TEXT NOT NULL,
    stripe_time INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX stripe_subscriptions_by_customer ON stripe_subscriptions (customer);
-- One metered item per model (its meter's event name); the price in cents per millisecond, as
-- Stripe's unit_amount_decimal, and since when the ledger has seen it on the item.
CREATE TABLE stripe_subscription_items (
    id TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    customer TEXT NOT NULL,
    event_name TEXT NOT NULL,
    price_id TEXT NOT NULL,
    cents_per_ms TEXT NOT NULL,
    price_since TEXT NOT NULL
);
CREATE INDEX stripe_subscription_items_by_customer ON stripe_subscription_items (customer, event_name);
-- The subscription a checkout's key is for: a key is never made live for one that has ended.
ALTER TABLE checkout_keys ADD COLUMN subscription_id TEXT;
