-- The targets of a feature computation (temporary table ft_targets: source, appointment_id, as_of)
-- joined to their own booking record: the temporary table ft_tgt that appointment_features.sql reads.
-- A table of its own (analysed afterwards) rather than a CTE, so that the planner knows how many
-- targets there are and joins them by hash instead of looping.
CREATE TEMP TABLE ft_tgt ON COMMIT DROP AS
SELECT t.source, t.appointment_id, t.as_of,
       (t.as_of - DATE '2000-01-01') AS as_of_n,
       a.patient_key, a.resource_id, a.practitioner_id, a.department_id, a.branch_id, a.service_id,
       a.start_at, a.start_at::date AS day, (a.start_at::date - DATE '2000-01-01') AS day_n,
       a.duration_min, a.booked_at, a.channel, a.confirmed, a.reminder_sent, a.rescheduled_from_id,
       -- the target itself is among the bookings a run of as_of sees (not a same-day booking, not cancelled)
       (coalesce(a.booked_at, a.start_at) < t.as_of
        AND NOT (a.status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled',
                              'deleted')
                 AND coalesce(a.status_changed_at, a.start_at) < t.as_of))::int AS self_seen
FROM ft_targets t
JOIN core.appointment a ON a.source = t.source AND a.appointment_id = t.appointment_id
