-- Model authors paid through Stripe Connect (proxy/billing/payouts/). An author is known by the
-- handle the owner's [payouts] config names; its Express account comes later, and what it earns
-- meanwhile waits for it. Booleans are 0/1 integers on both databases.
CREATE TABLE authors (
    handle TEXT PRIMARY KEY,
    account_id TEXT UNIQUE,
    email TEXT,
    payouts_enabled INTEGER NOT NULL DEFAULT 0,
    details_submitted INTEGER NOT NULL DEFAULT 0,
    carry TEXT NOT NULL DEFAULT '0',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- Which invoice paid each prediction's author share: a prediction is shared out once, even if
-- two invoices' periods were to overlap.
CREATE TABLE payout_items (
    prediction_id TEXT PRIMARY KEY,
    invoice_id TEXT NOT NULL,
    author TEXT NOT NULL,
    share TEXT NOT NULL,
    amount TEXT NOT NULL
);
CREATE INDEX payout_items_by_invoice ON payout_items (invoice_id, author);
-- One transfer per author per invoice, written before anything is sent (the transfer outbox).
-- cents = floor(earned + carried_in); carried_out is what the author's next transfer adds.
CREATE TABLE payouts (
    invoice_id TEXT NOT NULL,
    author TEXT NOT NULL,
    customer TEXT NOT NULL,
    charge_id TEXT,
    charge_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    earned TEXT NOT NULL,
    carried_in TEXT NOT NULL,
    cents INTEGER NOT NULL,
    carried_out TEXT NOT NULL,
    created_at TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    transfer_id TEXT,
    delivered_at TEXT,
    dead_at TEXT,
    dead_reason TEXT,
    PRIMARY KEY (invoice_id, author)
);
CREATE INDEX payouts_by_charge ON payouts (charge_id);
CREATE INDEX payouts_pending ON payouts (author, created_at) WHERE delivered_at IS NULL AND dead_at IS NULL;
-- A refund of an invoice's charge reverses the same fraction of each transfer from it. Rows are
-- keyed by the charge's cumulative refunded amount they answer, so a replayed or late refund
-- event adds nothing.
CREATE TABLE payout_reversals (
    invoice_id TEXT NOT NULL,
    author TEXT NOT NULL,
    refunded_cents INTEGER NOT NULL,
    cents INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    reversal_id TEXT,
    delivered_at TEXT,
    dead_at TEXT,
    dead_reason TEXT,
    PRIMARY KEY (invoice_id, author, refunded_cents)
);
-- The transfer outbox's lanes: one author's transfers and reversals, in order, by one worker.
CREATE TABLE payout_lanes (
    author TEXT PRIMARY KEY,
    lease_owner TEXT,
    lease_until TEXT
);
-- The predictions of one customer in an invoice line's period (008 made it already, for caps).
CREATE INDEX IF NOT EXISTS billed_usage_by_customer_time ON billed_usage (stripe_customer, created_at);
