-- An order being placed. Written before its stock is reserved (its id is the order id and
-- the reservation id), deleted in the transaction that writes the order. A row left behind
-- is a reservation that no order refers to: the placement failed (and was abandoned on the
-- spot) or its process died (and the sweep abandons it after a grace period); either way
-- the sweep keeps releasing its stock until product-service confirms. An abandoned row
-- stays, so a retry with the same Idempotency-Key is refused rather than placed on stock
-- that is being given back.
CREATE TABLE placements (
    id           UUID        PRIMARY KEY,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    abandoned_at TIMESTAMPTZ,
    released_at  TIMESTAMPTZ
);
CREATE INDEX placements_unreleased ON placements (created_at) WHERE released_at IS NULL;
