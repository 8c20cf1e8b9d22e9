-- History of the targets when they all share ONE as-of date (a nightly run's horizon, a backtest day):
-- plain aggregates over what that date sees, no event stream. Same columns and the same values as
-- history_stream.sql (tests/features/test_build.py checks both against each other and against a
-- from-scratch recomputation). Spliced into appointment_features.sql by features/build.py.
--
-- Visibility at the as-of date A (the start of day A) of another appointment b:
--   known if booked before A; its outcome if it started before A; its cancellation / reschedule /
--   deletion if that happened before A (dates compared as whole days, as in history_stream.sql).
--
-- Parameters (constants, so that the planner estimates every filter): :as_of (A), :as_of_n (A as a day
-- number from 2000-01-01), :sources (the targets' sources), :first_day / :last_day (their days).
-- ---------------------------------------------------------------- patient history
pa AS (
    -- each appointment of the targets' patients, with what a run of A knows about it: its day has passed
    -- (seen: counts as expected, with its outcome), it was cancelled / rescheduled / deleted by then
    -- (dropped: no longer expected), its cancellation or reschedule happened by then (changed)
    SELECT b.source, b.patient_key, b.status, s.start_n,
           greatest(s.start_n, s.booked_n) < CAST(:as_of_n AS integer) AS seen,
           greatest(s.changed_n, s.start_n, s.booked_n) < CAST(:as_of_n AS integer)
               AND b.status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled',
                                'deleted') AS dropped,
           greatest(s.changed_n, s.booked_n) < CAST(:as_of_n AS integer) AS changed,
           coalesce(b.status LIKE 'cancelled%' AND b.status_changed_at >= b.start_at - interval '24 hours', false)
               AS late
    FROM core.appointment b
    CROSS JOIN LATERAL (SELECT (b.start_at::date - DATE '2000-01-01') AS start_n,
                               (coalesce(b.booked_at, b.start_at)::date - DATE '2000-01-01') AS booked_n,
                               (coalesce(b.status_changed_at, b.start_at)::date - DATE '2000-01-01') AS changed_n) s
    -- the targets' patients (a semi-join: estimated from the statistics, so aggregated by hash)
    WHERE (b.source, b.patient_key) IN (SELECT source, patient_key FROM ft_tgt)
      -- every fact about b becomes visible only after b was booked
      AND coalesce(b.booked_at, b.start_at) < CAST(:as_of AS date)
),
phist AS (
    SELECT source, patient_key, CAST(:as_of AS date) AS as_of,
           count(*) FILTER (WHERE seen) - count(*) FILTER (WHERE dropped) AS prior_appointments,
           count(*) FILTER (WHERE seen AND status IN ('arrived', 'fulfilled')) AS prior_attended,
           count(*) FILTER (WHERE seen AND status = 'noshow') AS prior_noshows,
           count(*) FILTER (WHERE changed AND status LIKE 'cancelled%') AS prior_cancellations,
           count(*) FILTER (WHERE changed AND status LIKE 'cancelled%' AND late) AS prior_late_cancellations,
           count(*) FILTER (WHERE changed AND status = 'rescheduled') AS prior_reschedules,
           max(start_n) FILTER (WHERE seen AND status IN ('arrived', 'fulfilled')) AS last_visit_n,
           max(start_n) FILTER (WHERE seen AND status = 'noshow') AS last_noshow_n
    FROM pa
    GROUP BY source, patient_key
),

-- ---------------------------------------------------------------- context no-show rates
ctx_out AS (
    SELECT b.source, b.practitioner_id, b.department_id, b.branch_id, b.service_id, (b.status = 'noshow')::int AS ns
    FROM core.appointment b
    WHERE b.status IN ('noshow', 'arrived', 'fulfilled')
      AND b.source = ANY(:sources)
      AND b.start_at >= CAST(:as_of AS date) - (:window_lag + 1)
      AND b.start_at < CAST(:as_of AS date)
),
ctx AS (
    SELECT k.kind, o.source, k.entity, CAST(:as_of_n AS integer) AS vis_n, count(*) AS n, sum(o.ns) AS ns
    FROM ctx_out o
    CROSS JOIN LATERAL (VALUES ('practitioner', o.practitioner_id), ('department', o.department_id),
                               ('branch', o.branch_id), ('service', o.service_id), ('all', '*')) AS k(kind, entity)
    WHERE k.entity IS NOT NULL
    GROUP BY 1, 2, 3, 4
),
base_rate AS (
    SELECT src.source, CAST(:as_of_n AS integer) AS vis_n,
           CASE WHEN c.n > 0 THEN c.ns::double precision / c.n END AS rate
    FROM unnest(CAST(:sources AS text[])) AS src(source)
    LEFT JOIN ctx c ON c.kind = 'all' AND c.source = src.source
),

-- ---------------------------------------------------------------- bookings known at as_of, per day
known AS NOT MATERIALIZED (  -- inlined into each count: the planner then estimates their sizes
    SELECT b.source, b.patient_key, b.resource_id, b.branch_id, b.start_at::date AS day
    FROM core.appointment b
    WHERE b.source = ANY(:sources)
      AND b.start_at >= CAST(:first_day AS date) AND b.start_at < CAST(:last_day AS date) + 1
      AND coalesce(b.booked_at, b.start_at) < CAST(:as_of AS date)
      AND NOT (b.status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled',
                            'deleted')
               AND coalesce(b.status_changed_at, b.start_at) < CAST(:as_of AS date))
),
pday AS (
    SELECT source, patient_key, day, CAST(:as_of AS date) AS as_of, count(*) AS n
    FROM known WHERE patient_key IS NOT NULL GROUP BY 1, 2, 3
),
rday AS (
    SELECT source, resource_id, day, CAST(:as_of AS date) AS as_of, count(*) AS n
    FROM known WHERE resource_id IS NOT NULL GROUP BY 1, 2, 3
),
bday AS (
    SELECT source, branch_id, day, CAST(:as_of AS date) AS as_of, count(*) AS n
    FROM known WHERE branch_id IS NOT NULL GROUP BY 1, 2, 3
),
