DROP VIEW IF EXISTS reporting.overbooking_next_week;
DROP VIEW IF EXISTS reporting.model_performance_weekly;
DROP VIEW IF EXISTS reporting.overbooking_recommendations;
DROP VIEW IF EXISTS reporting.risk_next_week;
DROP VIEW IF EXISTS reporting.patient_flow_weekly;
DROP VIEW IF EXISTS reporting.patient_flow_daily;
