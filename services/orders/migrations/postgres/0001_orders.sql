-- Orders, their history and the Idempotency-Key register (PostgreSQL).
CREATE TABLE orders (
    id TEXT PRIMARY KEY,               -- UUIDv7: sorts by creation time
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'completed', 'cancelled')),
    cancellation_reason TEXT,
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    currency TEXT NOT NULL,
    items TEXT NOT NULL,               -- JSON array of line items
    shipping_address TEXT NOT NULL,    -- JSON object
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX orders_by_status ON orders (status, id);

CREATE TABLE order_history (
    seq BIGSERIAL PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    at TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_id TEXT NOT NULL,
    status TEXT NOT NULL,
    UNIQUE (order_id, event_id)
);

CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,             -- the canonical request, to refuse a reused key
    order_id TEXT NOT NULL REFERENCES orders (id),
    created_at TEXT NOT NULL
);
