-- The outbox drained by any number of workers: a worker leases a whole lane (one customer's
-- events for one meter, since Stripe takes one call at a time per customer and meter), renews
-- the lease while it works, and a lease that runs out (its worker died) frees the lane for
-- another. A dead letter is a state of the outbox row, not a copy in another table, so marking
-- it cannot race marking it delivered.
CREATE TABLE meter_lanes (
    customer TEXT NOT NULL,
    event_name TEXT NOT NULL,
    lease_owner TEXT,
    lease_until TEXT,
    PRIMARY KEY (customer, event_name)
);
INSERT INTO meter_lanes (customer, event_name)
    SELECT DISTINCT customer, event_name FROM meter_outbox;
ALTER TABLE meter_outbox ADD COLUMN dead_at TEXT;
ALTER TABLE meter_outbox ADD COLUMN dead_reason TEXT;
INSERT INTO meter_outbox (prediction_id, customer, event_name, value_ms, created_at, dead_at, dead_reason)
    SELECT prediction_id, customer, event_name, value_ms, created_at, dead_at, reason FROM meter_dead_letter
    WHERE true  -- SQLite reads an ON CONFLICT after a bare SELECT as a join's ON
    ON CONFLICT (prediction_id) DO NOTHING;
INSERT INTO meter_lanes (customer, event_name)
    SELECT DISTINCT customer, event_name FROM meter_dead_letter WHERE true
    ON CONFLICT (customer, event_name) DO NOTHING;
DROP TABLE meter_dead_letter;
CREATE INDEX meter_outbox_pending ON meter_outbox (customer, event_name, created_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
