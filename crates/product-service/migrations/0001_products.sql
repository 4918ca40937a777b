CREATE TABLE products (
    id          UUID PRIMARY KEY,
    name        TEXT        NOT NULL CHECK (name <> ''),
    description TEXT        NOT NULL DEFAULT '',
    price_cents BIGINT      NOT NULL CHECK (price_cents >= 0),
    -- The database refuses negative stock: a bug elsewhere cannot oversell.
    stock       BIGINT      NOT NULL CHECK (stock >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX products_created ON products (created_at, id);

-- A reservation holds stock for an order. Its id comes from the caller (derived from the
-- order), which makes ReserveStock and ReleaseStock idempotent.
CREATE TABLE reservations (
    id          TEXT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    released_at TIMESTAMPTZ
);

CREATE TABLE reservation_items (
    reservation_id   TEXT   NOT NULL REFERENCES reservations (id),
    product_id       UUID   NOT NULL,
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (reservation_id, product_id)
);
