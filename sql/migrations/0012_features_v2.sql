-- depends: 0011_training
-- Feature set 2026.2: days to the nearest public holiday (either side), and the patient's late
-- cancellations (within 24 hours of the start) before the as-of date.
ALTER TABLE features.appointment_features
    ADD COLUMN days_to_nearest_holiday  integer,
    ADD COLUMN prior_late_cancellations integer;
COMMENT ON COLUMN features.appointment_features.days_to_nearest_holiday IS
    'Days to the nearest public holiday before or after the appointment''s day (capped at 60)';
