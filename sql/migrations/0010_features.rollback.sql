DROP TABLE IF EXISTS features.appointment_features;
DROP TABLE IF EXISTS features.calendar_day;
DROP TABLE IF EXISTS features.feature_set;
