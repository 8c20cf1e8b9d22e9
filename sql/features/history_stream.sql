-- History of the targets when each may have its own as-of date (training rows: every appointment as
-- of its own day). Window functions over an event stream: each fact becomes an event with the first
-- day number (vis_n) at which a run may see it, the (patient / entity, as-of) keys of the targets are
-- added to the same stream as query rows at their as-of day number, and a running sum up to the query
-- row gives exactly the facts visible at that as-of date. One pass for millions of targets, without a
-- join per target. Spliced into appointment_features.sql by features/build.py. Targets sharing one
-- as-of date are computed by the as-of engine instead (features/asof.py, asof_extracts.sql): the same
-- values, tested against this.
--
-- ---------------------------------------------------------------- patient history (event stream)
pat AS (
    SELECT DISTINCT source, patient_key FROM ft_tgt WHERE patient_key IS NOT NULL
),
pa AS (
    SELECT b.source, b.patient_key, b.status,
           (b.start_at::date - DATE '2000-01-01') AS start_n,
           (coalesce(b.booked_at, b.start_at)::date - DATE '2000-01-01') AS booked_n,
           (coalesce(b.status_changed_at, b.start_at)::date - DATE '2000-01-01') AS changed_n,
           (b.status LIKE 'cancelled%' AND b.status_changed_at >= b.start_at - interval '24 hours')::int AS late
    FROM core.appointment b
    JOIN pat ON pat.source = b.source AND pat.patient_key = b.patient_key
),
pev AS (
    -- an appointment whose day has passed counts as expected, with its outcome, from the next day
    SELECT source, patient_key, greatest(start_n, booked_n) + 1 AS vis_n,
           1 AS appt, (status = 'noshow')::int AS noshow, (status IN ('arrived', 'fulfilled'))::int AS attended,
           0 AS cancelled, 0 AS late_cancelled, 0 AS resched,
           CASE WHEN status IN ('arrived', 'fulfilled') THEN start_n END AS visit_n,
           CASE WHEN status = 'noshow' THEN start_n END AS noshow_n
    FROM pa
    UNION ALL
    -- ... and stops counting once it is cancelled, rescheduled or deleted
    SELECT source, patient_key, greatest(changed_n, start_n, booked_n) + 1, -1, 0, 0, 0, 0, 0, NULL, NULL
    FROM pa
    WHERE status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled', 'deleted')
    UNION ALL
    -- cancellations and reschedules count from the day after they happened, whatever the appointment's day
    SELECT source, patient_key, greatest(changed_n, booked_n) + 1, 0, 0, 0,
           (status LIKE 'cancelled%')::int, coalesce(late, 0), (status = 'rescheduled')::int, NULL, NULL
    FROM pa
    WHERE status LIKE 'cancelled%' OR status = 'rescheduled'
),
pstream AS (
    SELECT source, patient_key, vis_n, appt, noshow, attended, cancelled, late_cancelled, resched, visit_n,
           noshow_n, NULL::date AS as_of
    FROM pev
    UNION ALL
    SELECT DISTINCT source, patient_key, as_of_n, 0, 0, 0, 0, 0, 0, NULL::integer, NULL::integer, as_of
    FROM ft_tgt WHERE patient_key IS NOT NULL
),
phist_all AS (
    SELECT source, patient_key, as_of,
           sum(appt) OVER w AS prior_appointments,
           sum(attended) OVER w AS prior_attended,
           sum(noshow) OVER w AS prior_noshows,
           sum(cancelled) OVER w AS prior_cancellations,
           sum(late_cancelled) OVER w AS prior_late_cancellations,
           sum(resched) OVER w AS prior_reschedules,
           max(visit_n) OVER w AS last_visit_n,
           max(noshow_n) OVER w AS last_noshow_n
    FROM pstream
    WINDOW w AS (PARTITION BY source, patient_key ORDER BY vis_n RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
phist AS (
    SELECT * FROM phist_all WHERE as_of IS NOT NULL
),

-- ---------------------------------------------------------------- context no-show rates (event stream)
span AS (
    SELECT min(as_of) AS first_as_of, max(as_of) AS last_as_of FROM ft_tgt
),
ctx_daily AS (
    SELECT k.kind, b.source, k.entity, (b.start_at::date - DATE '2000-01-01') + 1 AS vis_n,
           count(*) AS n, sum((b.status = 'noshow')::int) AS ns
    FROM core.appointment b
    CROSS JOIN span
    CROSS JOIN LATERAL (VALUES ('practitioner', b.practitioner_id), ('department', b.department_id),
                               ('branch', b.branch_id), ('service', b.service_id), ('all', '*')) AS k(kind, entity)
    WHERE b.status IN ('noshow', 'arrived', 'fulfilled')
      AND k.entity IS NOT NULL
      AND b.source IN (SELECT DISTINCT source FROM ft_tgt)
      AND b.start_at >= span.first_as_of - (:window_lag + 1)
      AND b.start_at < span.last_as_of
    GROUP BY 1, 2, 3, 4
),
ctx_q AS (
    SELECT DISTINCT k.kind, t.source, k.entity, t.as_of_n AS vis_n
    FROM ft_tgt t
    CROSS JOIN LATERAL (VALUES ('practitioner', t.practitioner_id), ('department', t.department_id),
                               ('branch', t.branch_id), ('service', t.service_id), ('all', '*')) AS k(kind, entity)
    WHERE k.entity IS NOT NULL
),
ctx_stream AS (
    SELECT kind, source, entity, vis_n, n, ns, false AS is_q FROM ctx_daily
    UNION ALL
    SELECT kind, source, entity, vis_n, 0, 0, true FROM ctx_q
),
ctx_all AS (
    SELECT kind, source, entity, vis_n, is_q,
           sum(n) OVER w AS n, sum(ns) OVER w AS ns
    FROM ctx_stream
    WINDOW w AS (PARTITION BY kind, source, entity ORDER BY vis_n
                 RANGE BETWEEN :window_lag PRECEDING AND CURRENT ROW)
),
ctx AS (
    SELECT kind, source, entity, vis_n, n, ns FROM ctx_all WHERE is_q
),
base_rate AS (
    SELECT source, vis_n, CASE WHEN n > 0 THEN ns::double precision / n END AS rate
    FROM ctx WHERE kind = 'all'
),

-- ---------------------------------------------------------------- bookings known at as_of, per day
pday_keys AS (
    SELECT DISTINCT source, patient_key, day, as_of FROM ft_tgt WHERE patient_key IS NOT NULL
),
pday AS (
    SELECT k.source, k.patient_key, k.day, k.as_of, count(*) AS n
    FROM pday_keys k
    JOIN core.appointment b
      ON b.source = k.source AND b.patient_key = k.patient_key AND b.start_at::date = k.day
    WHERE coalesce(b.booked_at, b.start_at) < k.as_of
      AND NOT (b.status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled', 'deleted')
               AND coalesce(b.status_changed_at, b.start_at) < k.as_of)
    GROUP BY 1, 2, 3, 4
),
rday_keys AS (
    SELECT DISTINCT source, resource_id, day, as_of FROM ft_tgt WHERE resource_id IS NOT NULL
),
rday AS (
    SELECT k.source, k.resource_id, k.day, k.as_of, count(*) AS n
    FROM rday_keys k
    JOIN core.appointment b
      ON b.source = k.source AND b.resource_id = k.resource_id AND b.start_at::date = k.day
    WHERE coalesce(b.booked_at, b.start_at) < k.as_of
      AND NOT (b.status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled', 'deleted')
               AND coalesce(b.status_changed_at, b.start_at) < k.as_of)
    GROUP BY 1, 2, 3, 4
),
bday_keys AS (
    SELECT DISTINCT source, branch_id, day, as_of FROM ft_tgt WHERE branch_id IS NOT NULL
),
bday AS (
    SELECT k.source, k.branch_id, k.day, k.as_of, count(*) AS n
    FROM bday_keys k
    JOIN core.appointment b
      ON b.source = k.source AND b.branch_id = k.branch_id AND b.start_at::date = k.day
    WHERE coalesce(b.booked_at, b.start_at) < k.as_of
      AND NOT (b.status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled', 'deleted')
               AND coalesce(b.status_changed_at, b.start_at) < k.as_of)
    GROUP BY 1, 2, 3, 4
),
