DROP INDEX reporting.appointment_risk_start;
CREATE INDEX appointment_risk_start ON reporting.appointment_risk (start_at);
