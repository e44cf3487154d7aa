-- A saga ended by `order.cancelled` with no anomaly is `cancelled` (a business outcome), no
-- longer `failed` (a broken flow). SQLite cannot change a CHECK constraint in place: the table is
-- made again with the new one and its rows copied, the ones that ended cancelled by the flow
-- relabelled; then the state counts are taken again.
CREATE TABLE sagas_new (
    order_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('running', 'stuck', 'failed', 'cancelled', 'completed')),
    current_step TEXT NOT NULL,
    started_at TEXT NOT NULL,
    last_event_at TEXT NOT NULL,
    next_deadline TEXT,
    expected TEXT NOT NULL,
    anomalies TEXT NOT NULL,
    changed BIGINT NOT NULL
);
INSERT INTO sagas_new
SELECT order_id,
       CASE WHEN state = 'failed' AND anomalies = '[]' AND current_step = 'order.cancelled'
            THEN 'cancelled' ELSE state END,
       current_step, started_at, last_event_at, next_deadline, expected, anomalies, changed
FROM sagas;
DROP TABLE sagas;
ALTER TABLE sagas_new RENAME TO sagas;
CREATE INDEX sagas_changed ON sagas (changed);
CREATE INDEX sagas_next_deadline ON sagas (next_deadline);
CREATE INDEX sagas_state ON sagas (state, started_at);
DELETE FROM observer_counts WHERE name LIKE 'state %';
INSERT INTO observer_counts (name, n)
SELECT 'state ' || state, COUNT(*) FROM sagas GROUP BY state;
