-- The retention deletes expired Idempotency-Keys oldest first, by this index. (SQLite needs
-- none: it takes the oldest in rowid order, which is insertion order with one writer.)
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
