-- depends: 0032_risk_indexes
-- features.appointment_features: the key leads with the as-of date, so that it also serves what the
-- index on (feature_set_version, as_of) served (a run's rows, found by as-of date), and that index goes:
-- the scoring stage stores about a million rows a night at a large network, and each index costs
-- its share of that write. Lookups by the whole key (replacing rows, joins to listed appointments, the
-- training back-fill's NOT EXISTS) use any order of its columns.
ALTER TABLE features.appointment_features DROP CONSTRAINT appointment_features_pkey;
DROP INDEX features.appointment_features_as_of;
ALTER TABLE features.appointment_features
    ADD CONSTRAINT appointment_features_pkey PRIMARY KEY (feature_set_version, as_of, source, appointment_id);
