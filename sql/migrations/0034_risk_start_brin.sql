-- depends: 0033_features_key
-- reporting.appointment_risk: the index on the appointment's start becomes a BRIN index. The table grows
-- by a night's horizon at a time, in as-of order, and each run's rows start within [as_of, as_of +
-- horizon): block ranges of a run hold a week or so of start times, which is what a BRIN range needs to
-- skip every other run when an analyst filters by appointment date. The B-tree cost each night's COPY
-- an index entry per row in start-time order, scattered over the whole index (1M rows: 2.64 s -> 2.20 s
-- of server time, PostgreSQL 15), and grew by about 30 MB per million rows.
DROP INDEX reporting.appointment_risk_start;
CREATE INDEX appointment_risk_start ON reporting.appointment_risk USING brin (start_at);
