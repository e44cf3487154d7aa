-- Shipments. UNIQUE (order_id): one shipment per order, ever.
CREATE TABLE shipments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    payment_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('dispatched', 'failed')),
    carrier TEXT,
    tracking_number TEXT UNIQUE,
    reason TEXT,
    created_at TEXT NOT NULL
);
