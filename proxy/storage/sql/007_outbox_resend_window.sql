-- Stripe keeps a meter event's identifier, and an idempotency key, for about 24 hours: a resend
-- after that may count twice. So each event remembers its first attempt (the worker stops and
-- dead-letters it 23 hours after), and how many times an operator resent it after a check of
-- Stripe's totals (each resend goes under a new identifier, as the old one may still be held).
ALTER TABLE meter_outbox ADD COLUMN first_attempt_at TEXT;
ALTER TABLE meter_outbox ADD COLUMN resends INTEGER NOT NULL DEFAULT 0;
-- Rows a Stripe error report named were flagged but still counted as delivered: they are dead
-- letters now, waiting for an operator like any other.
UPDATE meter_outbox SET
    dead_at = (SELECT f.flagged_at FROM meter_error_flags f WHERE f.prediction_id = meter_outbox.prediction_id),
    dead_reason = (
        SELECT 'Stripe reported ' || f.code || ': ' || f.message FROM meter_error_flags f
        WHERE f.prediction_id = meter_outbox.prediction_id
    ),
    delivered_at = NULL
    WHERE prediction_id IN (SELECT prediction_id FROM meter_error_flags);
