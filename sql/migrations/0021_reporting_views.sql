-- depends: 0020_reporting_tables
-- Views for BI tools (issue 5): what a clinic's analyst opens in Superset, Metabase or DataLens without
-- reading code. They read core and the reporting tables with the privileges of their owner, so the
-- read-only BI role (0022) sees them without any access to core. Comments: "English | Русский".

CREATE VIEW reporting.patient_flow_daily AS
SELECT
    a.start_at::date                                                       AS day,
    date_trunc('week', a.start_at)::date                                   AS week,
    a.source,
    a.branch_id,
    coalesce(b.name, a.branch_id)                                          AS branch_name,
    a.department_id,
    coalesce(d.name, a.department_id)                                      AS department_name,
    a.practitioner_id,
    coalesce(p.display_name, a.practitioner_id)                            AS practitioner_name,
    count(*) FILTER (WHERE a.status <> 'deleted')                          AS booked,
    count(*) FILTER (WHERE a.status IN ('arrived', 'fulfilled'))           AS attended,
    count(*) FILTER (WHERE a.status = 'noshow')                            AS no_show,
    count(*) FILTER (WHERE a.status IN ('cancelled_by_patient', 'cancelled_by_clinic', 'cancelled_unknown'))
                                                                           AS cancelled,
    count(*) FILTER (WHERE a.status = 'rescheduled')                       AS rescheduled,
    count(*) FILTER (WHERE a.status = 'booked')                            AS outcome_unknown,
    round((count(*) FILTER (WHERE a.status = 'noshow'))::numeric
          / nullif(count(*) FILTER (WHERE a.status IN ('arrived', 'fulfilled', 'noshow')), 0), 4)
                                                                           AS no_show_rate
FROM core.appointment a
LEFT JOIN core.branch b ON b.source = a.source AND b.branch_id = a.branch_id
LEFT JOIN core.department d ON d.source = a.source AND d.department_id = a.department_id
LEFT JOIN core.practitioner p ON p.source = a.source AND p.practitioner_id = a.practitioner_id
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;
COMMENT ON VIEW reporting.patient_flow_daily IS
    'Daily patient flow by branch, department and doctor: booked, attended, no-shows, cancellations | Ежедневный '
    'поток пациентов по филиалам, отделениям и врачам: записи, явки, неявки, отмены';
COMMENT ON COLUMN reporting.patient_flow_daily.day IS 'Day of the appointments | День приёма';
COMMENT ON COLUMN reporting.patient_flow_daily.week IS 'Week (its Monday) | Неделя (её понедельник)';
COMMENT ON COLUMN reporting.patient_flow_daily.source IS 'Source system (MIS) | Система-источник (МИС)';
COMMENT ON COLUMN reporting.patient_flow_daily.branch_id IS 'Branch id | Идентификатор филиала';
COMMENT ON COLUMN reporting.patient_flow_daily.branch_name IS 'Branch | Филиал';
COMMENT ON COLUMN reporting.patient_flow_daily.department_id IS 'Department id | Идентификатор отделения';
COMMENT ON COLUMN reporting.patient_flow_daily.department_name IS 'Department | Отделение';
COMMENT ON COLUMN reporting.patient_flow_daily.practitioner_id IS 'Doctor id | Идентификатор врача';
COMMENT ON COLUMN reporting.patient_flow_daily.practitioner_name IS 'Doctor | Врач';
COMMENT ON COLUMN reporting.patient_flow_daily.booked IS 'Appointments booked for the day (not deleted) | Записей на день (кроме удалённых)';
COMMENT ON COLUMN reporting.patient_flow_daily.attended IS 'Patients who came | Пациентов пришло';
COMMENT ON COLUMN reporting.patient_flow_daily.no_show IS 'Patients who did not come (no-shows) | Неявки';
COMMENT ON COLUMN reporting.patient_flow_daily.cancelled IS 'Cancelled appointments (by patient, clinic or unknown) | Отменённые записи (пациентом, клиникой, неизвестно кем)';
COMMENT ON COLUMN reporting.patient_flow_daily.rescheduled IS 'Appointments moved to another time | Перенесённые записи';
COMMENT ON COLUMN reporting.patient_flow_daily.outcome_unknown IS 'Booked, outcome not known yet | Записаны, исход ещё неизвестен';
COMMENT ON COLUMN reporting.patient_flow_daily.no_show_rate IS 'No-shows / (attended + no-shows) | Неявки / (явки + неявки)';

CREATE VIEW reporting.patient_flow_weekly AS
SELECT week, source, branch_id, branch_name, department_id, department_name, practitioner_id, practitioner_name,
       sum(booked)::bigint          AS booked,
       sum(attended)::bigint        AS attended,
       sum(no_show)::bigint         AS no_show,
       sum(cancelled)::bigint       AS cancelled,
       sum(rescheduled)::bigint     AS rescheduled,
       sum(outcome_unknown)::bigint AS outcome_unknown,
       round(sum(no_show)::numeric / nullif(sum(attended) + sum(no_show), 0), 4) AS no_show_rate
FROM reporting.patient_flow_daily
GROUP BY week, source, branch_id, branch_name, department_id, department_name, practitioner_id, practitioner_name;
COMMENT ON VIEW reporting.patient_flow_weekly IS
    'Weekly patient flow by branch, department and doctor | Поток пациентов по неделям, филиалам, отделениям и врачам';
COMMENT ON COLUMN reporting.patient_flow_weekly.week IS 'Week (its Monday) | Неделя (её понедельник)';
COMMENT ON COLUMN reporting.patient_flow_weekly.source IS 'Source system (MIS) | Система-источник (МИС)';
COMMENT ON COLUMN reporting.patient_flow_weekly.branch_id IS 'Branch id | Идентификатор филиала';
COMMENT ON COLUMN reporting.patient_flow_weekly.branch_name IS 'Branch | Филиал';
COMMENT ON COLUMN reporting.patient_flow_weekly.department_id IS 'Department id | Идентификатор отделения';
COMMENT ON COLUMN reporting.patient_flow_weekly.department_name IS 'Department | Отделение';
COMMENT ON COLUMN reporting.patient_flow_weekly.practitioner_id IS 'Doctor id | Идентификатор врача';
COMMENT ON COLUMN reporting.patient_flow_weekly.practitioner_name IS 'Doctor | Врач';
COMMENT ON COLUMN reporting.patient_flow_weekly.booked IS 'Appointments booked (not deleted) | Записей (кроме удалённых)';
COMMENT ON COLUMN reporting.patient_flow_weekly.attended IS 'Patients who came | Пациентов пришло';
COMMENT ON COLUMN reporting.patient_flow_weekly.no_show IS 'No-shows | Неявки';
COMMENT ON COLUMN reporting.patient_flow_weekly.cancelled IS 'Cancelled appointments | Отменённые записи';
COMMENT ON COLUMN reporting.patient_flow_weekly.rescheduled IS 'Rescheduled appointments | Перенесённые записи';
COMMENT ON COLUMN reporting.patient_flow_weekly.outcome_unknown IS 'Booked, outcome not known yet | Записаны, исход ещё неизвестен';
COMMENT ON COLUMN reporting.patient_flow_weekly.no_show_rate IS 'No-shows / (attended + no-shows) | Неявки / (явки + неявки)';

CREATE VIEW reporting.risk_next_week AS
SELECT
    r.start_at::date                                  AS day,
    r.start_at,
    r.source,
    r.branch_id,
    coalesce(b.name, r.branch_id)                     AS branch_name,
    r.department_id,
    coalesce(d.name, r.department_id)                 AS department_name,
    r.practitioner_id,
    coalesce(p.display_name, r.practitioner_id)       AS practitioner_name,
    r.resource_id,
    coalesce(res.name, r.resource_id)                 AS resource_name,
    r.appointment_id,
    round(r.probability::numeric, 4)                  AS no_show_probability,
    r.risk_band,
    r.reason_1,
    r.reason_2,
    r.reason_3,
    r.model_version,
    r.as_of,
    r.scored_at
FROM reporting.appointment_risk r
JOIN (SELECT source, max(as_of) AS as_of FROM reporting.appointment_risk GROUP BY source) latest
  ON latest.source = r.source AND latest.as_of = r.as_of
LEFT JOIN core.branch b ON b.source = r.source AND b.branch_id = r.branch_id
LEFT JOIN core.department d ON d.source = r.source AND d.department_id = r.department_id
LEFT JOIN core.practitioner p ON p.source = r.source AND p.practitioner_id = r.practitioner_id
LEFT JOIN core.resource res ON res.source = r.source AND res.resource_id = r.resource_id;
COMMENT ON VIEW reporting.risk_next_week IS
    'Risk list of the latest nightly run: every booked appointment of the coming days with its no-show probability, '
    'risk band and reasons | Список риска последнего ночного запуска: все записи ближайших дней с вероятностью '
    'неявки, группой риска и причинами';
COMMENT ON COLUMN reporting.risk_next_week.day IS 'Day of the appointment | День приёма';
COMMENT ON COLUMN reporting.risk_next_week.start_at IS 'Appointment start, clinic local time | Начало приёма, местное время';
COMMENT ON COLUMN reporting.risk_next_week.source IS 'Source system (MIS) | Система-источник (МИС)';
COMMENT ON COLUMN reporting.risk_next_week.branch_id IS 'Branch id | Идентификатор филиала';
COMMENT ON COLUMN reporting.risk_next_week.branch_name IS 'Branch | Филиал';
COMMENT ON COLUMN reporting.risk_next_week.department_id IS 'Department id | Идентификатор отделения';
COMMENT ON COLUMN reporting.risk_next_week.department_name IS 'Department | Отделение';
COMMENT ON COLUMN reporting.risk_next_week.practitioner_id IS 'Doctor id | Идентификатор врача';
COMMENT ON COLUMN reporting.risk_next_week.practitioner_name IS 'Doctor | Врач';
COMMENT ON COLUMN reporting.risk_next_week.resource_id IS 'Schedule id | Идентификатор расписания';
COMMENT ON COLUMN reporting.risk_next_week.resource_name IS 'Schedule (doctor, room or device) | Расписание (врач, кабинет или аппарат)';
COMMENT ON COLUMN reporting.risk_next_week.appointment_id IS 'Appointment id in the MIS | Идентификатор записи в МИС';
COMMENT ON COLUMN reporting.risk_next_week.no_show_probability IS 'Predicted probability that the patient does not come | Прогнозная вероятность неявки';
COMMENT ON COLUMN reporting.risk_next_week.risk_band IS 'Risk band: low, medium, high | Группа риска: low (низкий), medium (средний), high (высокий)';
COMMENT ON COLUMN reporting.risk_next_week.reason_1 IS 'Strongest reason for the risk | Главная причина риска';
COMMENT ON COLUMN reporting.risk_next_week.reason_2 IS 'Second reason | Вторая причина';
COMMENT ON COLUMN reporting.risk_next_week.reason_3 IS 'Third reason | Третья причина';
COMMENT ON COLUMN reporting.risk_next_week.model_version IS 'Model version | Версия модели';
COMMENT ON COLUMN reporting.risk_next_week.as_of IS 'As-of date of the run | Дата расчёта';
COMMENT ON COLUMN reporting.risk_next_week.scored_at IS 'When the score was computed | Когда рассчитан прогноз';

CREATE VIEW reporting.overbooking_recommendations AS
SELECT
    s.day,
    s.slot_start,
    s.slot_index,
    s.source,
    o.branch_id,
    coalesce(b.name, o.branch_id)                          AS branch_name,
    o.department_id,
    coalesce(d.name, o.department_id)                      AS department_name,
    o.practitioner_id,
    coalesce(p.display_name, o.practitioner_id)            AS practitioner_name,
    s.resource_id,
    coalesce(res.name, s.resource_id)                      AS resource_name,
    s.session,
    s.booked,
    s.recommended_extras,
    round(s.expected_shows::numeric, 3)                    AS expected_shows,
    round(s.expected_wait::numeric, 3)                     AS expected_wait_slots,
    o.recommended_extras                                   AS day_extras,
    round((o.seen_with - o.seen_without)::numeric, 3)      AS day_patients_gained,
    round(o.utilisation_without::numeric, 4)               AS day_utilisation_without,
    round(o.utilisation_with::numeric, 4)                  AS day_utilisation_with,
    round(o.overtime_with::numeric, 3)                     AS day_overtime_with,
    round(o.p_overtime_with::numeric, 4)                   AS day_p_overtime_with,
    o.grid,
    s.as_of
FROM reporting.overbooking_slot s
JOIN reporting.overbooking_day o
  ON o.as_of = s.as_of AND o.source = s.source AND o.resource_id = s.resource_id AND o.day = s.day
 AND o.session = s.session
JOIN (SELECT source, max(as_of) AS as_of FROM reporting.overbooking_day GROUP BY source) latest
  ON latest.source = s.source AND latest.as_of = s.as_of
LEFT JOIN core.branch b ON b.source = o.source AND b.branch_id = o.branch_id
LEFT JOIN core.department d ON d.source = o.source AND d.department_id = o.department_id
LEFT JOIN core.practitioner p ON p.source = o.source AND p.practitioner_id = o.practitioner_id
LEFT JOIN core.resource res ON res.source = s.source AND res.resource_id = s.resource_id
WHERE s.recommended_extras > 0;
COMMENT ON VIEW reporting.overbooking_recommendations IS
    'Where to book extra patients in the coming days (latest nightly run): one row per slot with a recommended '
    'extra booking, with the day''s expected effect | Куда записать дополнительных пациентов в ближайшие дни '
    '(последний ночной запуск): строка на слот с рекомендованной доп. записью и ожидаемый эффект за день';
COMMENT ON COLUMN reporting.overbooking_recommendations.day IS 'Day | День';
COMMENT ON COLUMN reporting.overbooking_recommendations.slot_start IS 'Slot start, clinic local time (empty without a slot grid) | Начало слота, местное время (пусто без сетки слотов)';
COMMENT ON COLUMN reporting.overbooking_recommendations.slot_index IS 'Position of the slot in the day, from 0 | Номер слота за день, с 0';
COMMENT ON COLUMN reporting.overbooking_recommendations.source IS 'Source system (MIS) | Система-источник (МИС)';
COMMENT ON COLUMN reporting.overbooking_recommendations.branch_id IS 'Branch id | Идентификатор филиала';
COMMENT ON COLUMN reporting.overbooking_recommendations.branch_name IS 'Branch | Филиал';
COMMENT ON COLUMN reporting.overbooking_recommendations.department_id IS 'Department id | Идентификатор отделения';
COMMENT ON COLUMN reporting.overbooking_recommendations.department_name IS 'Department | Отделение';
COMMENT ON COLUMN reporting.overbooking_recommendations.practitioner_id IS 'Doctor id | Идентификатор врача';
COMMENT ON COLUMN reporting.overbooking_recommendations.practitioner_name IS 'Doctor | Врач';
COMMENT ON COLUMN reporting.overbooking_recommendations.resource_id IS 'Schedule id | Идентификатор расписания';
COMMENT ON COLUMN reporting.overbooking_recommendations.resource_name IS 'Schedule (doctor, room or device) | Расписание (врач, кабинет или аппарат)';
COMMENT ON COLUMN reporting.overbooking_recommendations.session IS 'Part of the day (days without a slot grid) | Часть дня (для дней без сетки слотов)';
COMMENT ON COLUMN reporting.overbooking_recommendations.booked IS 'Patients already booked into the slot | Уже записано в слот';
COMMENT ON COLUMN reporting.overbooking_recommendations.recommended_extras IS 'Extra patients to book into the slot | Сколько дополнительных пациентов записать в слот';
COMMENT ON COLUMN reporting.overbooking_recommendations.expected_shows IS 'Expected patients who come in the slot, extras included | Ожидаемо придут в слот, включая дополнительных';
COMMENT ON COLUMN reporting.overbooking_recommendations.expected_wait_slots IS 'Expected wait of a patient of the slot, in slots | Ожидаемое ожидание пациента слота, в слотах';
COMMENT ON COLUMN reporting.overbooking_recommendations.day_extras IS 'Extra bookings recommended for the whole day | Рекомендовано доп. записей на весь день';
COMMENT ON COLUMN reporting.overbooking_recommendations.day_patients_gained IS 'Expected additional patients seen that day | Ожидаемо дополнительно принятых пациентов за день';
COMMENT ON COLUMN reporting.overbooking_recommendations.day_utilisation_without IS 'Expected share of slots used that day without overbooking | Ожидаемая загрузка дня без овербукинга';
COMMENT ON COLUMN reporting.overbooking_recommendations.day_utilisation_with IS 'Expected share of slots used with the recommendation | Ожидаемая загрузка дня с рекомендацией';
COMMENT ON COLUMN reporting.overbooking_recommendations.day_overtime_with IS 'Expected overtime that day with the recommendation, slots | Ожидаемая переработка за день с рекомендацией, в слотах';
COMMENT ON COLUMN reporting.overbooking_recommendations.day_p_overtime_with IS 'Probability of any overtime that day with the recommendation | Вероятность переработки за день с рекомендацией';
COMMENT ON COLUMN reporting.overbooking_recommendations.grid IS 'Where the slots came from (slots, resource_day, booking_order) | Откуда слоты (slots, resource_day, booking_order)';
COMMENT ON COLUMN reporting.overbooking_recommendations.as_of IS 'As-of date of the run | Дата расчёта';

CREATE VIEW reporting.model_performance_weekly AS
WITH last_score AS (
    -- the forecast of each appointment made by the last run before its day (what the clinic acted on)
    SELECT DISTINCT ON (r.source, r.appointment_id)
           r.source, r.appointment_id, r.branch_id, r.probability, r.model_version
    FROM reporting.appointment_risk r
    WHERE r.as_of <= r.start_at::date
    ORDER BY r.source, r.appointment_id, r.as_of DESC
)
SELECT
    date_trunc('week', a.start_at)::date                                       AS week,
    s.source,
    CASE WHEN grouping(s.branch_id) = 1 THEN NULL ELSE s.branch_id END         AS branch_id,
    CASE WHEN grouping(s.branch_id) = 1 THEN 'All branches | Все филиалы'
         ELSE coalesce(max(b.name), s.branch_id) END                           AS branch_name,
    count(*)                                                                   AS appointments,
    round(avg(s.probability)::numeric, 4)                                      AS predicted_no_show_rate,
    round(avg((a.status = 'noshow')::int)::numeric, 4)                         AS observed_no_show_rate,
    round((avg((a.status = 'noshow')::int) - avg(s.probability))::numeric, 4)  AS observed_minus_predicted,
    round(avg(power(s.probability - (a.status = 'noshow')::int, 2))::numeric, 4) AS brier_score,
    string_agg(DISTINCT s.model_version, ', ')                                 AS model_versions
FROM last_score s
JOIN core.appointment a ON a.source = s.source AND a.appointment_id = s.appointment_id
LEFT JOIN core.branch b ON b.source = s.source AND b.branch_id = s.branch_id
WHERE a.status IN ('arrived', 'fulfilled', 'noshow')
GROUP BY GROUPING SETS ((date_trunc('week', a.start_at)::date, s.source, s.branch_id),
                        (date_trunc('week', a.start_at)::date, s.source));
COMMENT ON VIEW reporting.model_performance_weekly IS
    'Model performance in production: predicted against observed no-show rate per week and branch (calibration), '
    'Brier score | Качество модели в работе: прогнозная и фактическая доля неявок по неделям и филиалам '
    '(калибровка), оценка Брайера';
COMMENT ON COLUMN reporting.model_performance_weekly.week IS 'Week of the appointments (its Monday) | Неделя приёмов (её понедельник)';
COMMENT ON COLUMN reporting.model_performance_weekly.source IS 'Source system (MIS) | Система-источник (МИС)';
COMMENT ON COLUMN reporting.model_performance_weekly.branch_id IS 'Branch id (empty in the all-branches row) | Идентификатор филиала (пусто в строке по всем филиалам)';
COMMENT ON COLUMN reporting.model_performance_weekly.branch_name IS 'Branch | Филиал';
COMMENT ON COLUMN reporting.model_performance_weekly.appointments IS 'Scored appointments with a known outcome | Оценённых записей с известным исходом';
COMMENT ON COLUMN reporting.model_performance_weekly.predicted_no_show_rate IS 'Mean predicted no-show probability (last forecast before the day) | Средняя прогнозная вероятность неявки (последний прогноз до дня приёма)';
COMMENT ON COLUMN reporting.model_performance_weekly.observed_no_show_rate IS 'Observed share of no-shows | Фактическая доля неявок';
COMMENT ON COLUMN reporting.model_performance_weekly.observed_minus_predicted IS 'Observed minus predicted rate: above 0 the model underestimates | Факт минус прогноз: больше 0 — модель занижает риск';
COMMENT ON COLUMN reporting.model_performance_weekly.brier_score IS 'Brier score (mean squared error of the probability; lower is better) | Оценка Брайера (средний квадрат ошибки вероятности; меньше — лучше)';
COMMENT ON COLUMN reporting.model_performance_weekly.model_versions IS 'Model versions behind the forecasts | Версии модели, давшие прогнозы';

CREATE VIEW reporting.overbooking_next_week AS
SELECT
    o.day,
    o.source,
    o.branch_id,
    coalesce(b.name, o.branch_id)                          AS branch_name,
    o.department_id,
    coalesce(d.name, o.department_id)                      AS department_name,
    o.practitioner_id,
    coalesce(p.display_name, o.practitioner_id)            AS practitioner_name,
    o.resource_id,
    coalesce(res.name, o.resource_id)                      AS resource_name,
    o.session,
    o.grid,
    o.slots,
    o.booked,
    o.recommended_extras,
    round(o.seen_without::numeric, 3)                      AS seen_without,
    round(o.seen_with::numeric, 3)                         AS seen_with,
    round((o.seen_with - o.seen_without)::numeric, 3)      AS patients_gained,
    round(o.utilisation_without::numeric, 4)               AS utilisation_without,
    round(o.utilisation_with::numeric, 4)                  AS utilisation_with,
    round(o.idle_without::numeric, 3)                      AS idle_without,
    round(o.idle_with::numeric, 3)                         AS idle_with,
    round(o.overtime_without::numeric, 3)                  AS overtime_without,
    round(o.overtime_with::numeric, 3)                     AS overtime_with,
    round(o.p_overtime_without::numeric, 4)                AS p_overtime_without,
    round(o.p_overtime_with::numeric, 4)                   AS p_overtime_with,
    round(o.mean_wait_without::numeric, 3)                 AS mean_wait_without,
    round(o.mean_wait_with::numeric, 3)                    AS mean_wait_with,
    o.as_of
FROM reporting.overbooking_day o
JOIN (SELECT source, max(as_of) AS as_of FROM reporting.overbooking_day GROUP BY source) latest
  ON latest.source = o.source AND latest.as_of = o.as_of
LEFT JOIN core.branch b ON b.source = o.source AND b.branch_id = o.branch_id
LEFT JOIN core.department d ON d.source = o.source AND d.department_id = o.department_id
LEFT JOIN core.practitioner p ON p.source = o.source AND p.practitioner_id = o.practitioner_id
LEFT JOIN core.resource res ON res.source = o.source AND res.resource_id = o.resource_id;
COMMENT ON VIEW reporting.overbooking_next_week IS
    'Every schedule-day of the coming days (latest nightly run): expected patients seen, use of the slots, idle '
    'time, overtime and waiting without and with the recommended overbooking | Каждый день расписания на '
    'ближайшие дни (последний ночной запуск): ожидаемые приёмы, загрузка, простой, переработка и ожидание без '
    'рекомендованного овербукинга и с ним';
COMMENT ON COLUMN reporting.overbooking_next_week.day IS 'Day | День';
COMMENT ON COLUMN reporting.overbooking_next_week.source IS 'Source system (MIS) | Система-источник (МИС)';
COMMENT ON COLUMN reporting.overbooking_next_week.branch_id IS 'Branch id | Идентификатор филиала';
COMMENT ON COLUMN reporting.overbooking_next_week.branch_name IS 'Branch | Филиал';
COMMENT ON COLUMN reporting.overbooking_next_week.department_id IS 'Department id | Идентификатор отделения';
COMMENT ON COLUMN reporting.overbooking_next_week.department_name IS 'Department | Отделение';
COMMENT ON COLUMN reporting.overbooking_next_week.practitioner_id IS 'Doctor id | Идентификатор врача';
COMMENT ON COLUMN reporting.overbooking_next_week.practitioner_name IS 'Doctor | Врач';
COMMENT ON COLUMN reporting.overbooking_next_week.resource_id IS 'Schedule id | Идентификатор расписания';
COMMENT ON COLUMN reporting.overbooking_next_week.resource_name IS 'Schedule (doctor, room or device) | Расписание (врач, кабинет или аппарат)';
COMMENT ON COLUMN reporting.overbooking_next_week.session IS 'Part of the day (days without a slot grid) | Часть дня (для дней без сетки слотов)';
COMMENT ON COLUMN reporting.overbooking_next_week.grid IS 'Where the slots came from (slots, resource_day, booking_order) | Откуда слоты (slots, resource_day, booking_order)';
COMMENT ON COLUMN reporting.overbooking_next_week.slots IS 'Slots in the day | Слотов за день';
COMMENT ON COLUMN reporting.overbooking_next_week.booked IS 'Booked appointments | Записанных пациентов';
COMMENT ON COLUMN reporting.overbooking_next_week.recommended_extras IS 'Recommended extra bookings | Рекомендовано дополнительных записей';
COMMENT ON COLUMN reporting.overbooking_next_week.seen_without IS 'Expected patients seen without overbooking | Ожидаемо принятых без овербукинга';
COMMENT ON COLUMN reporting.overbooking_next_week.seen_with IS 'Expected patients seen with the recommendation | Ожидаемо принятых с рекомендацией';
COMMENT ON COLUMN reporting.overbooking_next_week.patients_gained IS 'Expected additional patients seen | Ожидаемо дополнительно принятых пациентов';
COMMENT ON COLUMN reporting.overbooking_next_week.utilisation_without IS 'Expected share of slots used without overbooking | Ожидаемая загрузка без овербукинга';
COMMENT ON COLUMN reporting.overbooking_next_week.utilisation_with IS 'Expected share of slots used with the recommendation | Ожидаемая загрузка с рекомендацией';
COMMENT ON COLUMN reporting.overbooking_next_week.idle_without IS 'Expected idle slots without overbooking | Ожидаемый простой без овербукинга, слотов';
COMMENT ON COLUMN reporting.overbooking_next_week.idle_with IS 'Expected idle slots with the recommendation | Ожидаемый простой с рекомендацией, слотов';
COMMENT ON COLUMN reporting.overbooking_next_week.overtime_without IS 'Expected overtime without overbooking, slots | Ожидаемая переработка без овербукинга, слотов';
COMMENT ON COLUMN reporting.overbooking_next_week.overtime_with IS 'Expected overtime with the recommendation, slots | Ожидаемая переработка с рекомендацией, слотов';
COMMENT ON COLUMN reporting.overbooking_next_week.p_overtime_without IS 'Probability of overtime without overbooking | Вероятность переработки без овербукинга';
COMMENT ON COLUMN reporting.overbooking_next_week.p_overtime_with IS 'Probability of overtime with the recommendation | Вероятность переработки с рекомендацией';
COMMENT ON COLUMN reporting.overbooking_next_week.mean_wait_without IS 'Expected wait per patient seen without overbooking, slots | Ожидаемое ожидание на пациента без овербукинга, слотов';
COMMENT ON COLUMN reporting.overbooking_next_week.mean_wait_with IS 'Expected wait per patient seen with the recommendation, slots | Ожидаемое ожидание на пациента с рекомендацией, слотов';
COMMENT ON COLUMN reporting.overbooking_next_week.as_of IS 'As-of date of the run | Дата расчёта';
