-- The ledger as the first modelfolio proxy made it (before versioned migrations): a ledger file
-- from then already has these tables, and this migration leaves them as they are.
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_by_caller ON predictions (caller, created_at);
CREATE TABLE IF NOT EXISTS billed_usage (
    prediction_id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    stripe_customer TEXT,
    model TEXT NOT NULL,
    version TEXT,
    predict_time_ms INTEGER NOT NULL,
    price_per_second TEXT NOT NULL,
    amount TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS billed_usage_by_caller ON billed_usage (caller);
CREATE TABLE IF NOT EXISTS meter_outbox (
    prediction_id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    event_name TEXT NOT NULL,
    value_ms INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    delivered_at TEXT
);
CREATE TABLE IF NOT EXISTS meter_dead_letter (
    prediction_id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    event_name TEXT NOT NULL,
    value_ms INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    dead_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    customer TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stripe_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkout_keys (
    session_id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    key_id TEXT NOT NULL UNIQUE,
    browser_hash TEXT,
    created_at TEXT NOT NULL,
    shown_at TEXT,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS checkout_keys_by_customer ON checkout_keys (customer);
CREATE INDEX IF NOT EXISTS api_keys_by_customer ON api_keys (customer);
CREATE TABLE IF NOT EXISTS meter_error_flags (
    prediction_id TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    stripe_event TEXT NOT NULL,
    flagged_at TEXT NOT NULL
);
