-- An order cancelled while its payment was on the way (the order-service sweep gave up on
-- it) must not stay charged: payment-service also reads order_cancelled.
--   REFUNDED: the order had been charged; the charge is returned (refunded_at says when).
--   VOIDED:   the cancellation came first; the row (amount 0) takes the order's one payment
--             so a later order_created charges nothing.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('SUCCEEDED', 'FAILED', 'REFUNDED', 'VOIDED'));
ALTER TABLE payments ADD COLUMN refunded_at TIMESTAMPTZ;
