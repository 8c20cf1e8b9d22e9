ALTER TABLE features.appointment_features
    DROP COLUMN IF EXISTS days_to_nearest_holiday,
    DROP COLUMN IF EXISTS prior_late_cancellations;
