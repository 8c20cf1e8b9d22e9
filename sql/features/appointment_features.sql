-- Point-in-time features of the appointments listed in the temporary table ft_targets
-- (source, appointment_id, as_of): one output row per target row. Run by features/build.py.
--
-- Each target is seen from the start of its as_of day, plus its own booking record. Another
-- appointment b of the same source is
--   * known            from the day after it was booked        (booked_at < as_of),
--   * its outcome      from the day after its start            (start_at < as_of),
--   * its cancellation / reschedule / deletion from the day after it happened (status_changed_at < as_of).
--
-- The targets joined to their own booking record are in the temporary table ft_tgt (targets.sql),
-- analysed before this runs so that the planner knows their number.
--
-- The history part (patient history phist, context rates ctx / base_rate, bookings known per day
-- pday / rday / bday) is history_stream.sql (window functions over an event stream), spliced in at the
-- marker below. This statement computes targets with their own as-of dates (training rows); targets
-- sharing one as-of date (a night's horizon, a backtest day) are computed by the as-of engine
-- (features/asof.py with asof_extracts.sql), which gives the same values (tests/features).
--
-- Parameters: :country, :patient_prior_weight, :context_prior_weight, :window_lag (= window days - 1).
WITH RECURSIVE
-- @history
-- ---------------------------------------------------------------- position of the slot in the resource's day
slot_res AS (
    SELECT DISTINCT source, resource_id FROM ft_tgt WHERE resource_id IS NOT NULL
),
slot_grid AS (
    -- each resource's slots over the targets' days, in order (read in the order of the slot index; the
    -- position of an appointment is then a binary search: width_bucket counts the elements <= its
    -- argument, and times have microseconds)
    SELECT r.source, r.resource_id,
           ARRAY(SELECT s.start_at FROM core.slot s
                 WHERE s.source = r.source AND s.resource_id = r.resource_id
                   AND s.start_at >= d.first_day AND s.start_at < d.last_day + 1
                 ORDER BY s.start_at) AS starts
    FROM slot_res r
    CROSS JOIN (SELECT min(day) AS first_day, max(day) AS last_day FROM ft_tgt) d
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
    -- an entity without outcomes in the window (no ctx row) gets the clinic rate
    CASE WHEN t.practitioner_id IS NOT NULL
         THEN (coalesce(cp.ns, 0) + :context_prior_weight * br.rate) / (coalesce(cp.n, 0) + :context_prior_weight)
    END::double precision AS practitioner_noshow_rate,
    CASE WHEN t.department_id IS NOT NULL
         THEN (coalesce(cdp.ns, 0) + :context_prior_weight * br.rate) / (coalesce(cdp.n, 0) + :context_prior_weight)
    END::double precision AS department_noshow_rate,
    CASE WHEN t.branch_id IS NOT NULL
         THEN (coalesce(cb.ns, 0) + :context_prior_weight * br.rate) / (coalesce(cb.n, 0) + :context_prior_weight)
    END::double precision AS branch_noshow_rate,
    CASE WHEN t.service_id IS NOT NULL
         THEN (coalesce(cs.ns, 0) + :context_prior_weight * br.rate) / (coalesce(cs.n, 0) + :context_prior_weight)
    END::double precision AS service_noshow_rate,
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
LEFT JOIN phist ph ON ph.source = t.source AND ph.patient_key = t.patient_key AND ph.as_of = t.as_of
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
LEFT JOIN slot_grid sg ON sg.source = t.source AND sg.resource_id = t.resource_id
-- slots of the resource before the target's day, before the end of that day, before the target
CROSS JOIN LATERAL (SELECT width_bucket(t.day - interval '1 microsecond', sg.starts) AS day_first,
                           width_bucket(t.day + interval '1 day' - interval '1 microsecond', sg.starts) AS day_last,
                           width_bucket(t.start_at - interval '1 microsecond', sg.starts) AS before) w
CROSS JOIN LATERAL (SELECT CASE WHEN w.day_last > w.day_first THEN w.before - w.day_first END AS slots_before,
                           CASE WHEN w.day_last > w.day_first THEN w.day_last - w.day_first END AS slots_in_day) sr
LEFT JOIN core.resource_day rd ON rd.source = t.source AND rd.resource_id = t.resource_id AND rd.day = t.day
LEFT JOIN chain_depth cd ON cd.source = t.source AND cd.appointment_id = t.appointment_id AND cd.as_of = t.as_of
LEFT JOIN features.calendar_day cal ON cal.country = :country AND cal.day = t.day
