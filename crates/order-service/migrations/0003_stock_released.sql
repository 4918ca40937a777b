-- A cancellation commits before the order's stock is released: a release can fail, or its
-- answer be lost, and a late payment must then find the order CANCELLED, not PENDING
-- again with its stock already back on sale. stock_released_at records that
-- product-service confirmed the release; the sweep retries the cancelled orders without it.
ALTER TABLE orders ADD COLUMN stock_released_at TIMESTAMPTZ;
-- Orders cancelled before this column existed had their stock released before their
-- cancellation committed.
UPDATE orders SET stock_released_at = updated_at WHERE status = 'CANCELLED';
CREATE INDEX orders_stock_to_release ON orders (updated_at)
    WHERE status = 'CANCELLED' AND stock_released_at IS NULL;
