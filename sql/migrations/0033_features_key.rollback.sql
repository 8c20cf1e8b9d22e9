ALTER TABLE features.appointment_features DROP CONSTRAINT appointment_features_pkey;
ALTER TABLE features.appointment_features
    ADD CONSTRAINT appointment_features_pkey PRIMARY KEY (feature_set_version, source, appointment_id, as_of);
CREATE INDEX appointment_features_as_of ON features.appointment_features (feature_set_version, as_of);
