-- depends: 0002_core
-- Reporting tables written by the scoring and optimisation stages and by the policy evaluation
-- (issue 5). BI tools (Superset, Metabase, DataLens) read them and the views of 0021 through the
-- read-only role of 0022. Every table and column has a comment in English and Russian
-- ("English | Русский"); tests/sql/test_reporting.py checks it.
--
-- The nightly rows are keyed by the run's as-of date: a re-run of a date replaces that date's rows.

CREATE TABLE reporting.appointment_risk (
    as_of            date        NOT NULL,
    source           text        NOT NULL,
    appointment_id   text        NOT NULL,
    resource_id      text,
    practitioner_id  text,
    department_id    text,
    branch_id        text,
    start_at         timestamp   NOT NULL,
    probability      double precision NOT NULL CHECK (probability BETWEEN 0 AND 1),
    risk_band        text        NOT NULL CHECK (risk_band IN ('low', 'medium', 'high')),
    reason_1         text,
    reason_2         text,
    reason_3         text,
    model_name       text        NOT NULL,
    model_version    text        NOT NULL,
    scored_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (as_of, source, appointment_id)
);
CREATE INDEX appointment_risk_start ON reporting.appointment_risk (start_at);
CREATE INDEX appointment_risk_appointment ON reporting.appointment_risk (source, appointment_id, as_of);
COMMENT ON TABLE reporting.appointment_risk IS
    'Predicted no-show risk of every booked appointment of the horizon, per nightly run (as-of date), with the '
    'top three reasons | Прогноз риска неявки для каждой записи на горизонте планирования, по ночным запускам '
    '(дата расчёта), с тремя главными причинами';
COMMENT ON COLUMN reporting.appointment_risk.as_of IS 'As-of date of the nightly run that scored the appointment | Дата расчёта ночного запуска, оценившего запись';
COMMENT ON COLUMN reporting.appointment_risk.source IS 'Source system (MIS) of the appointment | Система-источник (МИС) записи';
COMMENT ON COLUMN reporting.appointment_risk.appointment_id IS 'Appointment id in the source | Идентификатор записи в источнике';
COMMENT ON COLUMN reporting.appointment_risk.resource_id IS 'Schedule (doctor, room or device) | Расписание (врач, кабинет или аппарат)';
COMMENT ON COLUMN reporting.appointment_risk.practitioner_id IS 'Doctor | Врач';
COMMENT ON COLUMN reporting.appointment_risk.department_id IS 'Department | Отделение';
COMMENT ON COLUMN reporting.appointment_risk.branch_id IS 'Branch (clinic) | Филиал (клиника)';
COMMENT ON COLUMN reporting.appointment_risk.start_at IS 'Appointment start, clinic local time | Начало приёма, местное время клиники';
COMMENT ON COLUMN reporting.appointment_risk.probability IS 'Predicted probability that the patient does not come (0-1) | Прогнозная вероятность неявки пациента (0-1)';
COMMENT ON COLUMN reporting.appointment_risk.risk_band IS 'Risk band: low, medium or high (thresholds in settings) | Группа риска: low (низкий), medium (средний), high (высокий); пороги в настройках';
COMMENT ON COLUMN reporting.appointment_risk.reason_1 IS 'Strongest reason for the risk, in plain words (from SHAP contributions) | Главная причина риска простыми словами (по вкладам SHAP)';
COMMENT ON COLUMN reporting.appointment_risk.reason_2 IS 'Second reason for the risk | Вторая причина риска';
COMMENT ON COLUMN reporting.appointment_risk.reason_3 IS 'Third reason for the risk | Третья причина риска';
COMMENT ON COLUMN reporting.appointment_risk.model_name IS 'Registered model name in MLflow | Имя модели в реестре MLflow';
COMMENT ON COLUMN reporting.appointment_risk.model_version IS 'Model version that produced the score | Версия модели, давшая прогноз';
COMMENT ON COLUMN reporting.appointment_risk.scored_at IS 'When the score was computed | Когда рассчитан прогноз';

CREATE TABLE reporting.overbooking_day (
    as_of                    date        NOT NULL,
    source                   text        NOT NULL,
    resource_id              text        NOT NULL,
    day                      date        NOT NULL,
    session                  integer     NOT NULL DEFAULT 0,
    branch_id                text,
    department_id            text,
    practitioner_id          text,
    grid                     text        NOT NULL CHECK (grid IN ('slots', 'resource_day', 'booking_order')),
    slots                    integer     NOT NULL,
    booked                   integer     NOT NULL,
    recommended_extras       integer     NOT NULL,
    extra_show_probability   double precision NOT NULL,
    seen_without             double precision NOT NULL,
    seen_with                double precision NOT NULL,
    utilisation_without      double precision NOT NULL,
    utilisation_with         double precision NOT NULL,
    idle_without             double precision NOT NULL,
    idle_with                double precision NOT NULL,
    overtime_without         double precision NOT NULL,
    overtime_with            double precision NOT NULL,
    p_overtime_without       double precision NOT NULL,
    p_overtime_with          double precision NOT NULL,
    mean_wait_without        double precision NOT NULL,
    mean_wait_with           double precision NOT NULL,
    cost_without             double precision NOT NULL,
    cost_with                double precision NOT NULL,
    cost_weights             text        NOT NULL,
    found_by                 text        NOT NULL,
    optimizer_seconds        double precision NOT NULL,
    computed_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (as_of, source, resource_id, day, session)
);
CREATE INDEX overbooking_day_day ON reporting.overbooking_day (day);
COMMENT ON TABLE reporting.overbooking_day IS
    'Overbooking recommendation per resource-day of the horizon: expected figures without and with the recommended '
    'extra bookings (exact slot model) | Рекомендация по овербукингу на день расписания: ожидаемые показатели без '
    'рекомендованных дополнительных записей и с ними (точная модель слотов)';
COMMENT ON COLUMN reporting.overbooking_day.as_of IS 'As-of date of the nightly run | Дата расчёта ночного запуска';
COMMENT ON COLUMN reporting.overbooking_day.source IS 'Source system (MIS) | Система-источник (МИС)';
COMMENT ON COLUMN reporting.overbooking_day.resource_id IS 'Schedule (doctor, room or device) | Расписание (врач, кабинет или аппарат)';
COMMENT ON COLUMN reporting.overbooking_day.day IS 'Day of the schedule | День расписания';
COMMENT ON COLUMN reporting.overbooking_day.session IS 'Part of the day when a day without a slot grid was split into sessions (0 otherwise) | Часть дня, если день без сетки слотов разбит на сеансы (иначе 0)';
COMMENT ON COLUMN reporting.overbooking_day.branch_id IS 'Branch (clinic) | Филиал (клиника)';
COMMENT ON COLUMN reporting.overbooking_day.department_id IS 'Department | Отделение';
COMMENT ON COLUMN reporting.overbooking_day.practitioner_id IS 'Doctor | Врач';
COMMENT ON COLUMN reporting.overbooking_day.grid IS 'Where the slots came from: slots (slot grid), resource_day (hours and slot length) or booking_order (no grid: appointments in booking order) | Откуда слоты: slots (сетка слотов), resource_day (часы и длина слота) или booking_order (сетки нет: записи в порядке записи)';
COMMENT ON COLUMN reporting.overbooking_day.slots IS 'Slots in the day | Слотов за день';
COMMENT ON COLUMN reporting.overbooking_day.booked IS 'Booked appointments | Записанных пациентов';
COMMENT ON COLUMN reporting.overbooking_day.recommended_extras IS 'Recommended extra bookings in the day | Рекомендовано дополнительных записей за день';
COMMENT ON COLUMN reporting.overbooking_day.extra_show_probability IS 'Assumed probability that an extra patient comes (the model''s average) | Принятая вероятность явки дополнительного пациента (средняя по модели)';
COMMENT ON COLUMN reporting.overbooking_day.seen_without IS 'Expected patients seen without overbooking | Ожидаемо принятых пациентов без овербукинга';
COMMENT ON COLUMN reporting.overbooking_day.seen_with IS 'Expected patients seen with the recommendation | Ожидаемо принятых пациентов с рекомендацией';
COMMENT ON COLUMN reporting.overbooking_day.utilisation_without IS 'Expected share of slots used without overbooking (0-1) | Ожидаемая доля занятых слотов без овербукинга (0-1)';
COMMENT ON COLUMN reporting.overbooking_day.utilisation_with IS 'Expected share of slots used with the recommendation (0-1) | Ожидаемая доля занятых слотов с рекомендацией (0-1)';
COMMENT ON COLUMN reporting.overbooking_day.idle_without IS 'Expected idle slots without overbooking | Ожидаемо простаивающих слотов без овербукинга';
COMMENT ON COLUMN reporting.overbooking_day.idle_with IS 'Expected idle slots with the recommendation | Ожидаемо простаивающих слотов с рекомендацией';
COMMENT ON COLUMN reporting.overbooking_day.overtime_without IS 'Expected overtime without overbooking, slots | Ожидаемая переработка без овербукинга, в слотах';
COMMENT ON COLUMN reporting.overbooking_day.overtime_with IS 'Expected overtime with the recommendation, slots | Ожидаемая переработка с рекомендацией, в слотах';
COMMENT ON COLUMN reporting.overbooking_day.p_overtime_without IS 'Probability of any overtime without overbooking | Вероятность переработки без овербукинга';
COMMENT ON COLUMN reporting.overbooking_day.p_overtime_with IS 'Probability of any overtime with the recommendation | Вероятность переработки с рекомендацией';
COMMENT ON COLUMN reporting.overbooking_day.mean_wait_without IS 'Expected wait per patient seen without overbooking, slots | Ожидаемое ожидание на принятого пациента без овербукинга, в слотах';
COMMENT ON COLUMN reporting.overbooking_day.mean_wait_with IS 'Expected wait per patient seen with the recommendation, slots | Ожидаемое ожидание на принятого пациента с рекомендацией, в слотах';
COMMENT ON COLUMN reporting.overbooking_day.cost_without IS 'Expected cost (waiting, idle time, overtime) without overbooking | Ожидаемые издержки (ожидание, простой, переработка) без овербукинга';
COMMENT ON COLUMN reporting.overbooking_day.cost_with IS 'Expected cost with the recommendation | Ожидаемые издержки с рекомендацией';
COMMENT ON COLUMN reporting.overbooking_day.cost_weights IS 'Cost weights used: W waiting / I idle / O overtime / R value of a patient seen | Веса издержек: W ожидание / I простой / O переработка / R ценность принятого пациента';
COMMENT ON COLUMN reporting.overbooking_day.found_by IS 'Which search step found the plan (greedy, exchange, cp-sat, seed, none) | Каким шагом найден план (greedy, exchange, cp-sat, seed, none)';
COMMENT ON COLUMN reporting.overbooking_day.optimizer_seconds IS 'Optimiser time for this day, seconds | Время оптимизации дня, секунд';
COMMENT ON COLUMN reporting.overbooking_day.computed_at IS 'When the recommendation was computed | Когда рассчитана рекомендация';

CREATE TABLE reporting.overbooking_slot (
    as_of                 date        NOT NULL,
    source                text        NOT NULL,
    resource_id           text        NOT NULL,
    day                   date        NOT NULL,
    session               integer     NOT NULL DEFAULT 0,
    slot_index            integer     NOT NULL,
    slot_start            timestamp,
    booked                integer     NOT NULL,
    recommended_extras    integer     NOT NULL,
    expected_shows        double precision NOT NULL,
    expected_wait         double precision NOT NULL,
    expected_queue_after  double precision NOT NULL,
    no_overbook           boolean     NOT NULL,
    PRIMARY KEY (as_of, source, resource_id, day, session, slot_index)
);
COMMENT ON TABLE reporting.overbooking_slot IS
    'Overbooking recommendation per slot: extra bookings, expected patients, wait and queue | Рекомендация по '
    'овербукингу для каждого слота: дополнительные записи, ожидаемые пациенты, ожидание и очередь';
COMMENT ON COLUMN reporting.overbooking_slot.as_of IS 'As-of date of the nightly run | Дата расчёта ночного запуска';
COMMENT ON COLUMN reporting.overbooking_slot.source IS 'Source system (MIS) | Система-источник (МИС)';
COMMENT ON COLUMN reporting.overbooking_slot.resource_id IS 'Schedule (doctor, room or device) | Расписание (врач, кабинет или аппарат)';
COMMENT ON COLUMN reporting.overbooking_slot.day IS 'Day of the schedule | День расписания';
COMMENT ON COLUMN reporting.overbooking_slot.session IS 'Part of the day (see overbooking_day.session) | Часть дня (см. overbooking_day.session)';
COMMENT ON COLUMN reporting.overbooking_slot.slot_index IS 'Position of the slot in the day, from 0 | Номер слота за день, с 0';
COMMENT ON COLUMN reporting.overbooking_slot.slot_start IS 'Slot start, clinic local time (empty when the day has no slot grid) | Начало слота, местное время (пусто, если у дня нет сетки слотов)';
COMMENT ON COLUMN reporting.overbooking_slot.booked IS 'Patients booked into the slot | Записано пациентов в слот';
COMMENT ON COLUMN reporting.overbooking_slot.recommended_extras IS 'Recommended extra bookings into the slot | Рекомендовано дополнительных записей в слот';
COMMENT ON COLUMN reporting.overbooking_slot.expected_shows IS 'Expected patients who come in the slot, with the recommendation | Ожидаемо придут в слот, с учётом рекомендации';
COMMENT ON COLUMN reporting.overbooking_slot.expected_wait IS 'Expected wait of a patient of this slot, slots | Ожидаемое ожидание пациента этого слота, в слотах';
COMMENT ON COLUMN reporting.overbooking_slot.expected_queue_after IS 'Expected patients still waiting at the end of the slot; at the last slot this is the expected overtime | Ожидаемая очередь в конце слота; для последнего слота это ожидаемая переработка';
COMMENT ON COLUMN reporting.overbooking_slot.no_overbook IS 'The slot may not be overbooked (marked so, free, or at its limit) | Слот нельзя перегружать (так отмечен, свободен или лимит)';

CREATE TABLE reporting.policy_evaluation (
    label          text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    data           text        NOT NULL,
    method         text        NOT NULL CHECK (method IN ('exact', 'replay')),
    cost_weights   text        NOT NULL,
    policy         text        NOT NULL,
    metric         text        NOT NULL,
    value          double precision,
    ci_low         double precision,
    ci_high        double precision,
    change_pct     double precision,
    days           integer     NOT NULL,
    notes          text,
    PRIMARY KEY (label, method, cost_weights, policy, metric)
);
COMMENT ON TABLE reporting.policy_evaluation IS
    'Comparison of overbooking policies on the same resource-days: mean with a bootstrap interval and the change '
    'against no overbooking | Сравнение политик овербукинга на одних и тех же днях расписания: среднее с '
    'бутстреп-интервалом и изменение относительно работы без овербукинга';
COMMENT ON COLUMN reporting.policy_evaluation.label IS 'Name of the evaluation run (a re-run with the same name replaces it) | Имя прогона оценки (повторный прогон с тем же именем заменяет его)';
COMMENT ON COLUMN reporting.policy_evaluation.created_at IS 'When the evaluation ran | Когда выполнена оценка';
COMMENT ON COLUMN reporting.policy_evaluation.data IS 'Which resource-days were used and how they were formed | Какие дни расписания использованы и как сформированы';
COMMENT ON COLUMN reporting.policy_evaluation.method IS 'exact: exact expectations on predicted probabilities; replay: held-out real outcomes | exact: точные ожидания по прогнозным вероятностям; replay: реальные исходы отложенных дней';
COMMENT ON COLUMN reporting.policy_evaluation.cost_weights IS 'Cost weights W/I/O/R of this comparison | Веса издержек W/I/O/R в этом сравнении';
COMMENT ON COLUMN reporting.policy_evaluation.policy IS 'Policy: none, flat, threshold, topk, greedy, optimizer, scenario | Политика: none (без овербукинга), flat, threshold, topk, greedy, optimizer, scenario';
COMMENT ON COLUMN reporting.policy_evaluation.metric IS 'Measure (patients_seen, utilisation, idle_slots, mean_wait, p90_wait, p_overtime, mean_overtime, extras, cost) | Показатель (принято пациентов, загрузка, простой, среднее и P90 ожидание, вероятность и средняя переработка, доп. записи, издержки)';
COMMENT ON COLUMN reporting.policy_evaluation.value IS 'Mean per resource-day (waits: per patient seen) | Среднее на день расписания (ожидание: на принятого пациента)';
COMMENT ON COLUMN reporting.policy_evaluation.ci_low IS 'Lower end of the 95% bootstrap interval over resource-days | Нижняя граница 95% бутстреп-интервала по дням';
COMMENT ON COLUMN reporting.policy_evaluation.ci_high IS 'Upper end of the 95% bootstrap interval | Верхняя граница 95% бутстреп-интервала';
COMMENT ON COLUMN reporting.policy_evaluation.change_pct IS 'Change against no overbooking, percent (empty when that is zero) | Изменение относительно работы без овербукинга, % (пусто, если там ноль)';
COMMENT ON COLUMN reporting.policy_evaluation.days IS 'Resource-days compared | Сравнено дней расписания';
COMMENT ON COLUMN reporting.policy_evaluation.notes IS 'Assumptions of the evaluation | Допущения оценки';

CREATE TABLE reporting.policy_evaluation_fairness (
    label          text        NOT NULL,
    method         text        NOT NULL CHECK (method IN ('exact', 'replay')),
    cost_weights   text        NOT NULL,
    policy         text        NOT NULL,
    group_kind     text        NOT NULL,
    group_label    text        NOT NULL,
    mean_wait      double precision,
    patients       integer     NOT NULL,
    PRIMARY KEY (label, method, cost_weights, policy, group_kind, group_label)
);
COMMENT ON TABLE reporting.policy_evaluation_fairness IS
    'Mean wait of booked patients who came, by patient group and risk decile, per policy | Среднее ожидание '
    'пришедших записанных пациентов по группам пациентов и децилям риска, для каждой политики';
COMMENT ON COLUMN reporting.policy_evaluation_fairness.label IS 'Name of the evaluation run | Имя прогона оценки';
COMMENT ON COLUMN reporting.policy_evaluation_fairness.method IS 'exact or replay (see policy_evaluation) | exact или replay (см. policy_evaluation)';
COMMENT ON COLUMN reporting.policy_evaluation_fairness.cost_weights IS 'Cost weights W/I/O/R | Веса издержек W/I/O/R';
COMMENT ON COLUMN reporting.policy_evaluation_fairness.policy IS 'Policy | Политика';
COMMENT ON COLUMN reporting.policy_evaluation_fairness.group_kind IS 'Grouping: age_band, sex, welfare, risk_decile | Группировка: возраст, пол, соцпрограмма, дециль риска';
COMMENT ON COLUMN reporting.policy_evaluation_fairness.group_label IS 'Group | Группа';
COMMENT ON COLUMN reporting.policy_evaluation_fairness.mean_wait IS 'Mean wait of the group''s patients who came, slots | Среднее ожидание пришедших пациентов группы, в слотах';
COMMENT ON COLUMN reporting.policy_evaluation_fairness.patients IS 'Booked patients of the group who came (over all days) | Пришедших записанных пациентов группы (за все дни)';
