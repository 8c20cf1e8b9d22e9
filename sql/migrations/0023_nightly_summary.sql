-- depends: 0022_bi_role
-- One row per published nightly run (issue 5): what was scored and recommended for the coming days.
-- Written by the publishing stage (optimization/publish.py); a re-run of a date replaces its row.

CREATE TABLE reporting.nightly_summary (
    as_of                       date        PRIMARY KEY,
    first_day                   date,
    last_day                    date,
    model_version               text,
    appointments_scored         integer     NOT NULL,
    high_risk                   integer     NOT NULL,
    medium_risk                 integer     NOT NULL,
    mean_probability            double precision,
    resource_days               integer     NOT NULL,
    resource_days_without_grid  integer     NOT NULL,
    extras_recommended          integer     NOT NULL,
    expected_patients_gained    double precision NOT NULL,
    expected_overtime_added     double precision NOT NULL,
    unplanned_appointments      integer     NOT NULL,
    published_at                timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE reporting.nightly_summary IS
    'One row per nightly run: appointments scored, high-risk count, extra bookings recommended and the expected '
    'effect for the coming days | Одна строка на ночной запуск: оценено записей, из них высокого риска, '
    'рекомендовано дополнительных записей и ожидаемый эффект на ближайшие дни';
COMMENT ON COLUMN reporting.nightly_summary.as_of IS 'As-of date of the nightly run | Дата расчёта ночного запуска';
COMMENT ON COLUMN reporting.nightly_summary.first_day IS 'First day of the scored horizon | Первый день горизонта';
COMMENT ON COLUMN reporting.nightly_summary.last_day IS 'Last day with scored appointments | Последний день с оценёнными записями';
COMMENT ON COLUMN reporting.nightly_summary.model_version IS 'Model version that scored the run | Версия модели, оценившей записи';
COMMENT ON COLUMN reporting.nightly_summary.appointments_scored IS 'Booked appointments scored | Оценено записей';
COMMENT ON COLUMN reporting.nightly_summary.high_risk IS 'Appointments in the high risk band | Записей высокого риска';
COMMENT ON COLUMN reporting.nightly_summary.medium_risk IS 'Appointments in the medium risk band | Записей среднего риска';
COMMENT ON COLUMN reporting.nightly_summary.mean_probability IS 'Mean predicted no-show probability | Средняя прогнозная вероятность неявки';
COMMENT ON COLUMN reporting.nightly_summary.resource_days IS 'Schedule-days optimised | Оптимизировано дней расписания';
COMMENT ON COLUMN reporting.nightly_summary.resource_days_without_grid IS 'Schedule-days without a slot grid (slots formed in booking order) | Дней расписания без сетки слотов (слоты по порядку записи)';
COMMENT ON COLUMN reporting.nightly_summary.extras_recommended IS 'Extra bookings recommended | Рекомендовано дополнительных записей';
COMMENT ON COLUMN reporting.nightly_summary.expected_patients_gained IS 'Expected additional patients seen | Ожидаемо дополнительно принятых пациентов';
COMMENT ON COLUMN reporting.nightly_summary.expected_overtime_added IS 'Expected overtime added in all, slots | Ожидаемая добавленная переработка, всего слотов';
COMMENT ON COLUMN reporting.nightly_summary.unplanned_appointments IS 'Scored appointments left out of the optimisation (no schedule or doctor) | Оценённые записи вне оптимизации (нет расписания или врача)';
COMMENT ON COLUMN reporting.nightly_summary.published_at IS 'When the run was published | Когда результаты опубликованы';
