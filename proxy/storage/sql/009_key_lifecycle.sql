-- Keys that end: a rotated key works until its grace period is over, then it is refused.
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
-- One-time links the owner's CLI makes for a customer who lost their key: only the link's hash is
-- kept; the first use revokes the customer's keys and shows a new one, once.
CREATE TABLE key_recovery_links (
    token_hash TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    key_id TEXT
);
