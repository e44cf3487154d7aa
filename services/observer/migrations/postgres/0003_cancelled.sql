-- A saga ended by `order.cancelled` with no anomaly is `cancelled` (a business outcome), no
-- longer `failed` (a broken flow): the CHECK constraint admits it, those rows are relabelled, and
-- the state counts are taken again.
ALTER TABLE sagas DROP CONSTRAINT IF EXISTS sagas_state_check;
ALTER TABLE sagas ADD CONSTRAINT sagas_state_check
    CHECK (state IN ('running', 'stuck', 'failed', 'cancelled', 'completed'));
UPDATE sagas SET state = 'cancelled'
WHERE state = 'failed' AND anomalies = '[]' AND current_step = 'order.cancelled';
DELETE FROM observer_counts WHERE name LIKE 'state %';
INSERT INTO observer_counts (name, n)
SELECT 'state ' || state, COUNT(*) FROM sagas GROUP BY state;
