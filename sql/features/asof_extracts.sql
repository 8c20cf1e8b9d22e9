-- Extracts of the as-of feature engine (features/asof.py): the rows that the features of targets sharing
-- ONE as-of date A need, read as Arrow tables; the features are then computed in numpy. The same values
-- as appointment_features.sql (with history_stream.sql), which documents each feature; tests compare them.
--
-- Visibility at A (the start of day A) of another appointment b of the same source:
--   known if booked before A (coalesce(booked_at, start_at) < A); its outcome if it started before A;
--   its cancellation / reschedule / deletion if that happened before A (coalesce(status_changed_at,
--   start_at) < A). The target's own booking record is always used.
--
-- Each query below starts with a line "-- @query <name>". Parameters (:name) are rendered as SQL literals
-- by features/asof.py (dates, integers, booleans, text arrays): the Arrow reader streams a query without
-- bound parameters by binary COPY, several times faster than a prepared statement's rows.
--
-- Two connections read one snapshot. The first reads the targets and what joins the temporary tables it
-- writes:
--   ft_keys  (source, appointment_id)            listed targets (build_features(appointments=...))
--   ft_pat   (source, patient_key, pid)          the targets' patients, pid = the engine's patient code
--   ft_chain (target_row, source, prev_id)       targets that replace another booking (their row in the engine)
-- the second (in a thread, meanwhile) the queries by source and day range: calendar, context_outcomes,
-- slots, resource_days, known_bookings. :sources / :first_day / :last_day are the targets' sources and days
-- (for a horizon: the requested sources, every source when :all_sources, and the horizon's days; the
-- engine ignores rows of other sources and days).

-- @query horizon_targets
-- The appointments a run of A scores: starting in [A, :horizon_end), known at A (booked before A, not
-- cancelled, rescheduled or deleted before A), of :sources (all sources when :all_sources), with their
-- own booking record. Every one of them is known at A (self_seen = 1), and together they are every
-- known booking of their days and sources (known_bookings is not read in this mode).
SELECT a.source, a.appointment_id, a.patient_key, a.resource_id, a.practitioner_id, a.department_id,
       a.branch_id, a.service_id, a.start_at, a.duration_min, a.booked_at, a.channel, a.confirmed,
       a.reminder_sent, a.rescheduled_from_id
FROM core.appointment a
WHERE a.start_at >= :as_of AND a.start_at < :horizon_end
  AND coalesce(a.booked_at, a.start_at) < :as_of
  AND NOT (a.status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled', 'deleted')
           AND coalesce(a.status_changed_at, a.start_at) < :as_of)
  AND (:all_sources OR a.source = ANY(:sources))

-- @query listed_targets
-- Listed appointments (ft_keys) with their own booking record, whatever their visibility at A (a
-- same-day booking is scored as at its booking); self_seen: the target is itself a booking known at A.
SELECT a.source, a.appointment_id, a.patient_key, a.resource_id, a.practitioner_id, a.department_id,
       a.branch_id, a.service_id, a.start_at, a.duration_min, a.booked_at, a.channel, a.confirmed,
       a.reminder_sent, a.rescheduled_from_id,
       (coalesce(a.booked_at, a.start_at) < :as_of
        AND NOT (a.status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled',
                              'deleted')
                 AND coalesce(a.status_changed_at, a.start_at) < :as_of)) AS self_seen
FROM ft_keys k
JOIN core.appointment a ON a.source = k.source AND a.appointment_id = k.appointment_id

-- @query known_bookings
-- Listed targets only: the bookings known at A on the targets' days (:first_day ... :last_day) of their
-- sources, for the per-day counts (of the patient, the resource, the branch).
SELECT b.source, b.patient_key, b.resource_id, b.branch_id, (b.start_at::date - DATE '2000-01-01') AS day_n
FROM core.appointment b
WHERE b.source = ANY(:sources)
  AND b.start_at >= :first_day AND b.start_at < :last_day + 1
  AND coalesce(b.booked_at, b.start_at) < :as_of
  AND NOT (b.status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled', 'deleted')
           AND coalesce(b.status_changed_at, b.start_at) < :as_of)

-- @query patient_history
-- Appointments of the targets' patients known at A that count in some patient feature: those that
-- started before A (expected, with their outcome; dropped again if cancelled / rescheduled / deleted
-- before A) and cancellations / reschedules that happened before A. Every other known row counts in
-- none (history_stream.sql and appointment_features.sql give the definitions). late: a cancellation
-- within 24 hours of the start.
SELECT p.pid, b.status,
       (b.start_at::date - DATE '2000-01-01') AS start_n,
       (coalesce(b.status_changed_at, b.start_at)::date - DATE '2000-01-01') AS changed_n,
       coalesce(b.status LIKE 'cancelled%' AND b.status_changed_at >= b.start_at - interval '24 hours', false) AS late
FROM ft_pat p
JOIN core.appointment b ON b.source = p.source AND b.patient_key = p.patient_key
WHERE coalesce(b.booked_at, b.start_at) < :as_of
  AND (b.start_at < :as_of
       OR ((b.status LIKE 'cancelled%' OR b.status = 'rescheduled')
           AND coalesce(b.status_changed_at, b.start_at) < :as_of))

-- @query patients
SELECT p.pid, c.sex, c.birth_year, c.flags::text AS flags
FROM ft_pat p
JOIN core.patient c ON c.source = p.source AND c.patient_key = p.patient_key

-- @query context_outcomes
-- Outcomes of the :window_days days before A of the sources, counted per (doctor, department,
-- branch, service): the engine adds them up per doctor, department, branch, service and source (the
-- clinic rate). Small: one row per combination seen.
SELECT b.source, b.practitioner_id, b.department_id, b.branch_id, b.service_id,
       count(*) AS n, sum((b.status = 'noshow')::int) AS ns
FROM core.appointment b
WHERE b.status IN ('noshow', 'arrived', 'fulfilled')
  AND (:all_sources OR b.source = ANY(:sources))
  AND b.start_at >= :as_of - :window_days AND b.start_at < :as_of
GROUP BY 1, 2, 3, 4, 5

-- @query slots
-- The slot grid of the sources over the days (:first_day ... :last_day); the engine keeps the slots of
-- the targets' (resource, day) pairs.
SELECT s.source, s.resource_id, s.start_at
FROM core.slot s
WHERE (:all_sources OR s.source = ANY(:sources))
  AND s.start_at >= :first_day AND s.start_at < :last_day + 1

-- @query resource_days
-- Capacity of the resources on the days (the fallback of a day without slots).
SELECT d.source, d.resource_id, (d.day - DATE '2000-01-01') AS day_n, d.slots, d.slot_minutes,
       (extract(epoch FROM d.work_start) * 1000000)::bigint AS work_start_us
FROM core.resource_day d
WHERE (:all_sources OR d.source = ANY(:sources))
  AND d.day >= :first_day AND d.day <= :last_day

-- @query reschedule_depth
-- Bookings replaced in a chain (rescheduled_from_id, followed through core.appointment, at most 20).
WITH RECURSIVE chain (target_row, source, prev_id, depth) AS (
    SELECT target_row, source, prev_id, 1 FROM ft_chain
    UNION ALL
    SELECT c.target_row, c.source, b.rescheduled_from_id, c.depth + 1
    FROM chain c
    JOIN core.appointment b ON b.source = c.source AND b.appointment_id = c.prev_id
    WHERE b.rescheduled_from_id IS NOT NULL AND c.depth < 20
)
SELECT target_row, max(depth) AS depth FROM chain GROUP BY target_row

-- @query calendar
SELECT (day - DATE '2000-01-01') AS day_n, is_day_off, is_public_holiday, is_shortened_day, is_working_weekend,
       days_to_holiday, days_from_holiday
FROM features.calendar_day
WHERE country = :country AND day >= :first_day AND day <= :last_day

-- @query collation
-- Whether text sorts by bytes here (C / POSIX / C.UTF-8 of libc): the engine then orders the rows itself,
-- else the targets are read in the database's order.
-- (datlocprovider exists from PostgreSQL 15 on; before, every database collates with libc)
SELECT coalesce(to_jsonb(d) ->> 'datlocprovider', 'c') = 'c'
       AND (d.datcollate IN ('C', 'POSIX') OR lower(d.datcollate) IN ('c.utf-8', 'c.utf8')) AS bytewise
FROM pg_database d WHERE d.datname = current_database()
