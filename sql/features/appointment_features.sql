-- Point-in-time features of the appointments listed in the temporary table ft_targets
-- (source, appointment_id, as_of): one output row per target row. Run by features/build.py.
--
-- Each target is seen from the start of its as_of day, plus its own booking record. Another
-- appointment b of the same source is
--   * known            from the day after it was booked        (booked_at < as_of),
--   * its outcome      from the day after its start            (start_at < as_of),
--   * its cancellation / reschedule / deletion from the day after it happened (status_changed_at < as_of).
-- History is computed with window functions over an event stream: each fact becomes an event with
-- the first day number (vis_n) at which a run may see it, the targets are added to the same stream as
-- query rows at their as_of day number, and a running sum up to the query row gives exactly the facts
-- visible at that as_of. This scales to millions of targets with per-row as-of dates (training) in
-- one pass, without a join per target.
--
-- The targets joined to their own booking record are in the temporary table ft_tgt (targets.sql),
-- analysed before this runs so that the planner knows their number.
--
-- Parameters: :country, :patient_prior_weight, :context_prior_weight, :window_lag (= window days - 1).
WITH RECURSIVE
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
           noshow_n, NULL::text AS appointment_id, NULL::date AS as_of
    FROM pev
    UNION ALL
    SELECT source, patient_key, as_of_n, 0, 0, 0, 0, 0, 0, NULL, NULL, appointment_id, as_of
    FROM ft_tgt WHERE patient_key IS NOT NULL
),
phist_all AS (
    SELECT source, appointment_id, as_of,
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
    SELECT * FROM phist_all WHERE appointment_id IS NOT NULL
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

-- ---------------------------------------------------------------- same-day bookings known at as_of
pday_keys AS (
    SELECT DISTINCT source, patient_key, day, as_of FROM ft_tgt WHERE patient_key IS NOT NULL
),
pday AS (
    SELECT k.source, k.patient_key, k.day, k.as_of, count(*) AS n
    FROM pday_keys k
    JOIN core.appointment b
      ON b.source = k.source AND b.patient_key = k.patient_key
     AND b.start_at >= k.day AND b.start_at < k.day + 1
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
      ON b.source = k.source AND b.resource_id = k.resource_id
     AND b.start_at >= k.day AND b.start_at < k.day + 1
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
      ON b.source = k.source AND b.branch_id = k.branch_id
     AND b.start_at >= k.day AND b.start_at < k.day + 1
    WHERE coalesce(b.booked_at, b.start_at) < k.as_of
      AND NOT (b.status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled', 'deleted')
               AND coalesce(b.status_changed_at, b.start_at) < k.as_of)
    GROUP BY 1, 2, 3, 4
),

-- ---------------------------------------------------------------- position of the slot in the resource's day
slot_days AS (
    SELECT DISTINCT source, resource_id, day FROM ft_tgt WHERE resource_id IS NOT NULL
),
slot_stream AS (
    SELECT s.source, s.resource_id, k.day, s.start_at, 1 AS is_slot, NULL::text AS appointment_id, NULL::date AS as_of
    FROM slot_days k
    JOIN core.slot s ON s.source = k.source AND s.resource_id = k.resource_id
     AND s.start_at >= k.day AND s.start_at < k.day + 1
    UNION ALL
    SELECT source, resource_id, day, start_at, 0, appointment_id, as_of FROM ft_tgt WHERE resource_id IS NOT NULL
),
slot_rank AS (
    SELECT * FROM (
        SELECT source, appointment_id, as_of, is_slot,
               sum(is_slot) OVER (PARTITION BY source, resource_id, day ORDER BY start_at, is_slot
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS slots_before,
               sum(is_slot) OVER (PARTITION BY source, resource_id, day) AS slots_in_day
        FROM slot_stream
    ) s
    WHERE is_slot = 0 AND slots_in_day > 0
),

-- ---------------------------------------------------------------- reschedule chains (own booking record)
chain (source, appointment_id, as_of, prev_id, depth) AS (
    SELECT source, appointment_id, as_of, rescheduled_from_id, 1
    FROM ft_tgt WHERE rescheduled_from_id IS NOT NULL
    UNION ALL
    SELECT c.source, c.appointment_id, c.as_of, b.rescheduled_from_id, c.depth + 1
    FROM chain c
    JOIN core.appointment b ON b.source = c.source AND b.appointment_id = c.prev_id
    WHERE b.rescheduled_from_id IS NOT NULL AND c.depth < 20
),
chain_depth AS (
    SELECT source, appointment_id, as_of, max(depth) AS depth FROM chain GROUP BY 1, 2, 3
)

SELECT
    t.source, t.appointment_id, t.as_of, t.start_at,
    -- booking
    (t.day - t.booked_at::date) AS lead_days,
    greatest(extract(epoch FROM (t.start_at - t.booked_at)) / 3600.0, 0)::double precision AS lead_hours,
    (t.booked_at::date = t.day) AS same_day_booking,
    (extract(isodow FROM t.booked_at) - 1)::smallint AS booked_weekday,
    extract(hour FROM t.booked_at)::smallint AS booked_hour,
    t.channel,
    (t.rescheduled_from_id IS NOT NULL) AS is_reschedule,
    coalesce(cd.depth, 0)::smallint AS reschedule_depth,
    t.confirmed,
    -- appointment
    (extract(isodow FROM t.start_at) - 1)::smallint AS appt_weekday,
    (extract(hour FROM t.start_at) + extract(minute FROM t.start_at) / 60.0)::double precision AS appt_hour,
    coalesce(sr.slots_before,
             CASE WHEN rd.slot_minutes > 0 AND rd.work_start IS NOT NULL
                  THEN floor(extract(epoch FROM (t.start_at::time - rd.work_start)) / 60.0 / rd.slot_minutes) END
    )::integer AS slot_index,
    CASE
        WHEN sr.slots_in_day > 1 THEN least(sr.slots_before::double precision / (sr.slots_in_day - 1), 1.0)
        WHEN sr.slots_in_day = 1 THEN 0.0
        WHEN rd.slots > 1 AND rd.slot_minutes > 0 AND rd.work_start IS NOT NULL
            THEN least(greatest(floor(extract(epoch FROM (t.start_at::time - rd.work_start)) / 60.0 / rd.slot_minutes)
                                / (rd.slots - 1), 0.0), 1.0)
    END::double precision AS slot_position,
    coalesce(sr.slots_in_day, rd.slots)::integer AS day_slots,
    t.duration_min,
    t.service_id, t.department_id, t.practitioner_id, t.branch_id, t.resource_id,
    -- calendar
    cal.is_day_off, cal.is_public_holiday, cal.is_shortened_day, cal.is_working_weekend,
    cal.days_to_holiday, cal.days_from_holiday,
    least(cal.days_to_holiday, cal.days_from_holiday) AS days_to_nearest_holiday,
    extract(month FROM t.start_at)::smallint AS month,
    CASE WHEN extract(month FROM t.start_at) IN (12, 1, 2) THEN 'winter'
         WHEN extract(month FROM t.start_at) IN (3, 4, 5) THEN 'spring'
         WHEN extract(month FROM t.start_at) IN (6, 7, 8) THEN 'summer'
         ELSE 'autumn' END AS season,
    -- patient
    CASE WHEN p.birth_year IS NOT NULL THEN (extract(year FROM t.start_at) - p.birth_year)::smallint END AS age,
    p.sex,
    coalesce(ph.prior_appointments, 0)::integer AS prior_appointments,
    coalesce(ph.prior_attended, 0)::integer AS prior_attended,
    coalesce(ph.prior_noshows, 0)::integer AS prior_noshows,
    coalesce(ph.prior_cancellations, 0)::integer AS prior_cancellations,
    coalesce(ph.prior_late_cancellations, 0)::integer AS prior_late_cancellations,
    coalesce(ph.prior_reschedules, 0)::integer AS prior_reschedules,
    ((coalesce(ph.prior_noshows, 0) + :patient_prior_weight * br.rate)
        / (coalesce(ph.prior_noshows, 0) + coalesce(ph.prior_attended, 0) + :patient_prior_weight)
    )::double precision AS prior_noshow_rate,
    (t.day_n - ph.last_visit_n)::integer AS days_since_last_visit,
    (t.day_n - ph.last_noshow_n)::integer AS days_since_last_noshow,
    (coalesce(pd.n, 0) - t.self_seen)::integer AS same_day_appointments,
    p.flags AS patient_flags,
    -- context
    ((cp.ns + :context_prior_weight * br.rate) / (cp.n + :context_prior_weight))::double precision
        AS practitioner_noshow_rate,
    ((cdp.ns + :context_prior_weight * br.rate) / (cdp.n + :context_prior_weight))::double precision
        AS department_noshow_rate,
    ((cb.ns + :context_prior_weight * br.rate) / (cb.n + :context_prior_weight))::double precision
        AS branch_noshow_rate,
    ((cs.ns + :context_prior_weight * br.rate) / (cs.n + :context_prior_weight))::double precision
        AS service_noshow_rate,
    coalesce(cp.n, 0)::integer AS practitioner_volume,
    CASE WHEN t.resource_id IS NOT NULL
         THEN (coalesce(r.n, 0) - t.self_seen) END::integer AS resource_day_booked,
    CASE WHEN coalesce(sr.slots_in_day, rd.slots) > 0
         THEN (coalesce(r.n, 0) - t.self_seen)::double precision
              / coalesce(sr.slots_in_day, rd.slots) END AS resource_day_fill,
    CASE WHEN t.branch_id IS NOT NULL
         THEN (coalesce(bd.n, 0) - t.self_seen) END::integer AS branch_day_booked,
    t.reminder_sent
FROM ft_tgt t
LEFT JOIN core.patient p ON p.source = t.source AND p.patient_key = t.patient_key
LEFT JOIN phist ph ON ph.source = t.source AND ph.appointment_id = t.appointment_id AND ph.as_of = t.as_of
LEFT JOIN base_rate br ON br.source = t.source AND br.vis_n = t.as_of_n
LEFT JOIN ctx cp ON cp.kind = 'practitioner' AND cp.source = t.source AND cp.entity = t.practitioner_id
     AND cp.vis_n = t.as_of_n
LEFT JOIN ctx cdp ON cdp.kind = 'department' AND cdp.source = t.source AND cdp.entity = t.department_id
     AND cdp.vis_n = t.as_of_n
LEFT JOIN ctx cb ON cb.kind = 'branch' AND cb.source = t.source AND cb.entity = t.branch_id AND cb.vis_n = t.as_of_n
LEFT JOIN ctx cs ON cs.kind = 'service' AND cs.source = t.source AND cs.entity = t.service_id AND cs.vis_n = t.as_of_n
LEFT JOIN pday pd ON pd.source = t.source AND pd.patient_key = t.patient_key AND pd.day = t.day AND pd.as_of = t.as_of
LEFT JOIN rday r ON r.source = t.source AND r.resource_id = t.resource_id AND r.day = t.day AND r.as_of = t.as_of
LEFT JOIN bday bd ON bd.source = t.source AND bd.branch_id = t.branch_id AND bd.day = t.day AND bd.as_of = t.as_of
LEFT JOIN slot_rank sr ON sr.source = t.source AND sr.appointment_id = t.appointment_id AND sr.as_of = t.as_of
LEFT JOIN core.resource_day rd ON rd.source = t.source AND rd.resource_id = t.resource_id AND rd.day = t.day
LEFT JOIN chain_depth cd ON cd.source = t.source AND cd.appointment_id = t.appointment_id AND cd.as_of = t.as_of
LEFT JOIN features.calendar_day cal ON cal.country = :country AND cal.day = t.day
