DROP INDEX reporting.appointment_risk_as_of;
ALTER TABLE reporting.appointment_risk DROP CONSTRAINT appointment_risk_pkey;
ALTER TABLE reporting.appointment_risk ADD CONSTRAINT appointment_risk_pkey PRIMARY KEY (as_of, source, appointment_id);
CREATE INDEX appointment_risk_appointment ON reporting.appointment_risk (source, appointment_id, as_of);
