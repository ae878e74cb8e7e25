-- Listing (GET /v1/predictions, GET /v1/files) and run counts; the queries are the block at the
-- end of proxy/ledger.py.
-- The last record the proxy saw of each prediction, so its caller can list and read it after the
-- model server has forgotten it (it keeps finished predictions an hour, and none over a restart).
CREATE TABLE prediction_records (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    terminal INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX predictions_by_model ON predictions (model);
-- Each upload's file object as the model server answered it, until it expires there.
CREATE TABLE upload_records (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX uploads_by_caller ON uploads (caller, created_at);
