-- One payment per order: the unique order_id makes a second, different order_created for
-- the same order (a retried POST /orders relay, a replay) a no-op rather than a double charge.
CREATE TABLE payments (
    id           UUID        PRIMARY KEY,
    order_id     UUID        NOT NULL UNIQUE,
    amount_cents BIGINT      NOT NULL,
    status       TEXT        NOT NULL CHECK (status IN ('SUCCEEDED', 'FAILED')),
    -- Why a payment failed; NULL when it succeeded.
    reason       TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
