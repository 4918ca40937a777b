CREATE TABLE orders (
    id              UUID PRIMARY KEY,
    user_id         UUID        NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
    total_cents     BIGINT      NOT NULL CHECK (total_cents >= 0),
    cancel_reason   TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'PENDING';

CREATE TABLE order_items (
    order_id         UUID   NOT NULL REFERENCES orders (id),
    product_id       UUID   NOT NULL,
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, product_id)
);
