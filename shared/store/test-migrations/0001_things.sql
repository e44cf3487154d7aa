-- A table for the store's own unit tests.
CREATE TABLE things (
    id TEXT PRIMARY KEY,
    n BIGINT NOT NULL CHECK (n >= 0)
);
