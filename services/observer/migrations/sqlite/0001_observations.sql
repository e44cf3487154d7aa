-- What the observer saw: every event of the saga once (the inbox drops redeliveries; a second
-- event of one type for one order is kept, it is a duplicate effect to flag), and one summary
-- row per order, recomputed from its events whenever one arrives or a deadline passes.
CREATE TABLE observed_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    source TEXT NOT NULL,
    causation_id TEXT,
    occurred_at TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX observed_events_order ON observed_events (order_id, seq);

CREATE TABLE sagas (
    order_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('running', 'stuck', 'failed', 'completed')),
    current_step TEXT NOT NULL,
    started_at TEXT NOT NULL,
    last_event_at TEXT NOT NULL,
    -- The earliest deadline still ahead: when the sweep must look at this saga again.
    next_deadline TEXT,
    -- JSON: what is expected next, and what is wrong.
    expected TEXT NOT NULL,
    anomalies TEXT NOT NULL,
    -- Increases with every change, so the live feed reads what changed since it last looked.
    changed BIGINT NOT NULL
);
CREATE INDEX sagas_changed ON sagas (changed);
CREATE INDEX sagas_next_deadline ON sagas (next_deadline);
CREATE INDEX sagas_state ON sagas (state, started_at);
