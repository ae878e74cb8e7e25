-- A usage line says what it bills: a prediction's own compute, or a cached answer billed at a
-- fraction of the compute it saved (proxy/cache.py).
ALTER TABLE billed_usage ADD COLUMN kind TEXT NOT NULL DEFAULT 'compute';
