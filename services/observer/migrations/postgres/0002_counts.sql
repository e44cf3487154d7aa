-- What the observer's metrics and map show, kept up to date in the transaction that changes what
-- they count, so that reading them never scans the history: `event <type>` counts every event
-- ever stored (pruning does not lower it), `state <state>` the stored sagas in each state, and
-- `anomaly <kind>` the stored sagas with an anomaly of that kind.
CREATE TABLE observer_counts (
    name TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO observer_counts (name, n)
SELECT 'event ' || event_type, COUNT(*) FROM observed_events GROUP BY event_type;
INSERT INTO observer_counts (name, n)
SELECT 'state ' || state, COUNT(*) FROM sagas GROUP BY state;
INSERT INTO observer_counts (name, n)
SELECT 'anomaly illegal_sequence', COUNT(*) FROM sagas WHERE anomalies LIKE '%"illegal_sequence"%';
INSERT INTO observer_counts (name, n)
SELECT 'anomaly missing_compensation', COUNT(*) FROM sagas WHERE anomalies LIKE '%"missing_compensation"%';
INSERT INTO observer_counts (name, n)
SELECT 'anomaly duplicate_effect', COUNT(*) FROM sagas WHERE anomalies LIKE '%"duplicate_effect"%';
