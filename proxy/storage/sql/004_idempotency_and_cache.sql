-- Idempotency-Key on creates: a retry of the same request gets the prediction the first one made.
-- The prediction id is chosen and written here before the create is forwarded, so a proxy that
-- dies in between leaves a retry something to find (the model server creates by that id, once).
CREATE TABLE idempotency_keys (
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    prediction_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
-- Predictions answered from the result cache: the proxy, not the model server, keeps them.
CREATE TABLE cached_predictions (
    id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    record TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- An upload's content hash, so the result cache keys an uploaded image by its bytes.
ALTER TABLE uploads ADD COLUMN sha256 TEXT;
