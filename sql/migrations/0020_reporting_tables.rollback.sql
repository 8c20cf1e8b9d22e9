DROP TABLE IF EXISTS reporting.policy_evaluation_fairness;
DROP TABLE IF EXISTS reporting.policy_evaluation;
DROP TABLE IF EXISTS reporting.overbooking_slot;
DROP TABLE IF EXISTS reporting.overbooking_day;
DROP TABLE IF EXISTS reporting.appointment_risk;
