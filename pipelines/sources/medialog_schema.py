"""The Medialog tables as the demo/test generator creates them (PostgreSQL stand-in for SQL Server).

Table and column names are Medialog's own, as quoted UPPERCASE identifiers. Which of them are
seen in real Medialog SQL and which are guesses is documented in docs/medialog-generator.md; the
connector (:mod:`pipelines.sources.medialog`) does not use these definitions: it probes
``INFORMATION_SCHEMA.COLUMNS`` of whatever database it is pointed at.

Tables whose names start with ``CLINICFLOW_`` are NOT part of Medialog: they hold the generator's
clock, its ground truth (the true no-show probability of every booking) and the bookings whose
future events :func:`pipelines.sources.medialog_generator.advance` will still play. A connector
never reads them (the read-only test grants no access to them).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

DT = sa.DateTime  # SQL Server datetime: local wall-clock time, no time zone
SMALL = sa.SmallInteger  # SQL Server bit / tinyint flags

FM_ORG = sa.Table(
    "FM_ORG", metadata,
    sa.Column("FM_ORG_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("CODE", sa.String(20)),
    sa.Column("LABEL", sa.String(250)),
    sa.Column("ORG_TYPE", sa.String(1)),  # 'I' = the clinic's own branch
    sa.Column("ARCHIVE", SMALL),
)

FM_DEP = sa.Table(
    "FM_DEP", metadata,
    sa.Column("FM_DEP_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("LABEL", sa.String(250)),
    sa.Column("FM_INTORG_ID", sa.Integer),
    sa.Column("ARCHIVE", SMALL),
)

SPECIALISATION = sa.Table(
    "SPECIALISATION", metadata,
    sa.Column("SPECIALISATION_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("NAME", sa.String(250)),
)

MEDECINS = sa.Table(
    "MEDECINS", metadata,
    sa.Column("MEDECINS_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("NOM", sa.String(50)),
    sa.Column("PRENOM", sa.String(50)),
    sa.Column("PATRONYME", sa.String(50)),
    sa.Column("SPECIALISATION_ID", sa.Integer),
    sa.Column("TYPE", SMALL),  # 0 = a person who sees patients; other values: users, robots
    sa.Column("ARCHIVE", SMALL),
)

MEDDEP = sa.Table(
    "MEDDEP", metadata,
    sa.Column("MEDDEP_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("MEDECINS_ID", sa.Integer),
    sa.Column("FM_DEP_ID", sa.Integer),
    sa.Column("ARCHIVE", SMALL),
)

PL_EXAM = sa.Table(
    "PL_EXAM", metadata,
    sa.Column("PL_EXAM_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("NAME", sa.String(250)),
    sa.Column("CODE", sa.String(30)),
    sa.Column("DUREE", sa.Integer),
)

PL_LEG = sa.Table(
    "PL_LEG", metadata,
    sa.Column("PL_LEG_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("NAME", sa.String(100)),
    sa.Column("COLOR", sa.Integer),
)

PL_AGEND = sa.Table(
    "PL_AGEND", metadata,
    sa.Column("PL_AGEND_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("NAME", sa.String(100)),
    sa.Column("DUREE_TRANCHE", sa.Integer),  # slot length, minutes
    sa.Column("OWNER_TYPE", SMALL),
    sa.Column("ARCHIVE", SMALL),
)

PL_DAY = sa.Table(
    "PL_DAY", metadata,
    sa.Column("PL_DAY_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("PL_AGEND_ID", sa.Integer, nullable=False),
    sa.Column("NAME", sa.String(100)),
    sa.Column("DAY_OF_WEEK", SMALL),     # 1 = Monday ... 7 = Sunday; NULL = any
    sa.Column("DAY_EVEN", SMALL),        # 1 = even dates, 0 = odd dates; NULL = any
    sa.Column("DAY_OF_MONTH", SMALL),    # a specific date when set (with DAY_MONTH/DAY_YEAR)
    sa.Column("DAY_MONTH", SMALL),
    sa.Column("DAY_YEAR", sa.Integer),
    sa.Column("PERIOD_FROM", DT),
    sa.Column("PERIOD_TO", DT),
    sa.Column("START_TIME", sa.Integer),  # HHMM
    sa.Column("END_TIME", sa.Integer),    # HHMM
    sa.Column("ENABLED", SMALL),          # 0 = a day off
    sa.Column("DUREE_TRANCHE", sa.Integer),  # NULL: the agenda's
    sa.Column("DAY_ORDER", sa.Integer),   # the matching rule with the highest DAY_ORDER wins
)

PL_INT = sa.Table(
    "PL_INT", metadata,
    sa.Column("PL_INT_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("PL_DAY_ID", sa.Integer, nullable=False),
    sa.Column("START_TIME", sa.Integer),  # HHMM
    sa.Column("END_TIME", sa.Integer),    # HHMM
    sa.Column("PL_LEG_ID", sa.Integer),   # what the band is (a break: not bookable)
)

PL_SUBJ = sa.Table(
    "PL_SUBJ", metadata,
    sa.Column("PL_SUBJ_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("NAME", sa.String(100), nullable=False),
    sa.Column("OWNER_TYPE", SMALL),
    sa.Column("MEDECINS_ID", sa.Integer),
    sa.Column("MEDDEP_ID", sa.Integer),
    sa.Column("FM_INTORG_ID", sa.Integer),
    sa.Column("SPECIALISATION_ID", sa.Integer),
    sa.Column("LIEU", sa.String(100)),
    sa.Column("PL_EXAM_ID", sa.Integer),
    sa.Column("PL_AGEND_ID1", sa.Integer),
    sa.Column("ARCHIVE", SMALL),
    sa.Column("NO_SMS_NOTIFY", SMALL),
    sa.Column("KRN_CREATE_DATE", DT),
    sa.Column("KRN_MODIFY_DATE", DT),
)

PL_EXCL = sa.Table(
    "PL_EXCL", metadata,
    sa.Column("PL_EXCL_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("PL_SUBJ_ID", sa.Integer, nullable=False),
    sa.Column("FROM_DATE", DT),
    sa.Column("FROM_TIME", sa.Integer),  # HHMM
    sa.Column("TO_DATE", DT),
    sa.Column("TO_TIME", sa.Integer),    # HHMM, 2400 = end of TO_DATE
    sa.Column("PL_LEG_ID", sa.Integer),
    sa.Column("COMMENTAIRE", sa.String(250)),
    sa.Column("KRN_CREATE_DATE", DT),
    sa.Column("KRN_MODIFY_DATE", DT),
)

PATIENTS = sa.Table(
    "PATIENTS", metadata,
    sa.Column("PATIENTS_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("NOM", sa.String(50)),
    sa.Column("PRENOM", sa.String(50)),
    sa.Column("PATRONYME", sa.String(50)),
    sa.Column("POL", SMALL),               # 0 = male, 1 = female (see the connector's sex_codes)
    sa.Column("NE_LE", DT),                # birth date
    sa.Column("GOD_ROGDENIQ", sa.String(99)),  # birth year, as text
    sa.Column("TEL", sa.String(99)),
    sa.Column("RAB_TEL", sa.String(29)),
    sa.Column("E_MAIL", sa.String(99)),
    sa.Column("NOT_SEND_SMS", SMALL),
    sa.Column("DOSSIER_EXIT", SMALL),
    sa.Column("ARCHIVE", SMALL),
    sa.Column("KRN_CREATE_DATE", DT),
    sa.Column("KRN_MODIFY_DATE", DT),
)

PLANNING = sa.Table(
    "PLANNING", metadata,
    sa.Column("PLANNING_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("PL_SUBJ_ID", sa.Integer, nullable=False),
    sa.Column("DATE_CONS", DT, nullable=False),
    sa.Column("HEURE", sa.Integer, nullable=False),
    sa.Column("DUREE", sa.Integer, nullable=False),
    sa.Column("PATIENTS_ID", sa.Integer),
    sa.Column("NOM", sa.String(100)),
    sa.Column("PRENOM", sa.String(100)),
    sa.Column("PATRONYME", sa.String(100)),
    sa.Column("MOTIF", sa.Text),
    sa.Column("COMMENTAIRE", sa.Text),
    sa.Column("PL_EXAM_ID", sa.Integer),
    sa.Column("CANCELLED", SMALL),
    sa.Column("STATUS", SMALL),
    sa.Column("PATIENT_ARRIVEE", SMALL),
    sa.Column("ARRIVE_DATE", DT),
    sa.Column("NOT_ACCEPTED", SMALL),
    sa.Column("SOURCE_PLANNING_ID", sa.Integer),
    sa.Column("MEDECINS_CREATOR_ID", sa.Integer),
    sa.Column("MEDECINS_MODIFY_ID", sa.Integer),
    sa.Column("CREATE_DATE_TIME", DT),
    sa.Column("MODIFY_DATE_TIME", DT),
    sa.Column("DATE_START", DT),
    sa.Column("DATE_END", DT),
    sa.Column("KRN_CREATE_DATE", DT),
    sa.Column("KRN_CREATE_USER_ID", sa.Integer),
    sa.Column("KRN_MODIFY_DATE", DT),
    sa.Column("KRN_MODIFY_USER_ID", sa.Integer),
)

MOTCONSU = sa.Table(
    "MOTCONSU", metadata,
    sa.Column("MOTCONSU_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("PATIENTS_ID", sa.Integer),
    sa.Column("PLANNING_ID", sa.Integer),
    sa.Column("DATE_CONSULTATION", DT),
    sa.Column("MEDECINS_ID", sa.Integer),
    sa.Column("FM_DEP_ID", sa.Integer),
    sa.Column("REC_STATUS", sa.String(1)),  # 'D' = cancelled record
    sa.Column("KRN_CREATE_DATE", DT),
    sa.Column("KRN_MODIFY_DATE", DT),
)

FM_BILL = sa.Table(
    "FM_BILL", metadata,
    sa.Column("FM_BILL_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("PATIENTS_ID", sa.Integer),
    sa.Column("BILL_DATE", DT),
    sa.Column("MEDECINS1_ID", sa.Integer),
    sa.Column("FM_INTORG_ID", sa.Integer),
    sa.Column("KRN_CREATE_DATE", DT),
    sa.Column("KRN_MODIFY_DATE", DT),
)

SMS_MESSAGES = sa.Table(
    "SMS_MESSAGES", metadata,
    sa.Column("SMS_MESSAGES_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("REC_ID", sa.Integer),
    sa.Column("REC_TYPE", sa.String(50)),
    sa.Column("STATUS", SMALL),          # 1 = sent, 2 = delivery error (SENDED_DATETIME NULL)
    sa.Column("PHONE", sa.String(30)),
    sa.Column("MESSAGE", sa.Text),
    sa.Column("CREATE_DATE", DT),
    sa.Column("SENDED_DATETIME", DT),
)

#: Medialog tables in the order they are written.
MEDIALOG_TABLES = (
    FM_ORG, FM_DEP, SPECIALISATION, MEDECINS, MEDDEP, PL_EXAM, PL_LEG, PL_AGEND, PL_DAY, PL_INT,
    PL_SUBJ, PL_EXCL, PATIENTS, PLANNING, MOTCONSU, FM_BILL, SMS_MESSAGES,
)

# --------------------------------------------------------------------------------------------------
# Not Medialog: the generator's own tables.

CLINICFLOW_STATE = sa.Table(
    "CLINICFLOW_STATE", metadata,
    sa.Column("ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("CLOCK", sa.Date, nullable=False),        # everything before CLOCK 00:00 has happened
    sa.Column("HORIZON_END", sa.Date, nullable=False),  # advance() can reach at most this date
    sa.Column("SEED", sa.BigInteger, nullable=False),
    sa.Column("APPOINTMENTS", sa.BigInteger, nullable=False),
    sa.Column("GENERATOR_VERSION", sa.Integer, nullable=False),
    sa.Column("CONFIG", sa.Text, nullable=False),      # JSON of the GeneratorConfig
    sa.Column("GENERATED_AT", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ADVANCED_AT", sa.DateTime(timezone=True)),
)

#: Ground truth of every booking the generator made (also hard-deleted and not-yet-made ones).
CLINICFLOW_TRUTH = sa.Table(
    "CLINICFLOW_TRUTH", metadata,
    sa.Column("PLANNING_ID", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("P_NOSHOW", sa.Float, nullable=False),  # true probability of not coming if kept
    sa.Column("NOSHOW", sa.Boolean),                  # outcome of a kept booking (NULL if not kept)
    sa.Column("OUTCOME", sa.String(20), nullable=False),  # show, noshow, cancelled, clinic_cancelled, ...
    sa.Column("BOOKED_AT", DT, nullable=False),
    sa.Column("START_AT", DT, nullable=False),
    sa.Column("STATUS_AT", DT),                       # when a cancellation/deletion happened
    sa.Column("ATTENDANCE_EVIDENCE", SMALL),          # bitmask: 1 arrival, 2 visit record, 4 bill
)

#: Indexes a real Medialog has on the columns the connector filters and joins on.
INDEXES = (
    ("PLANNING", ("DATE_CONS",)), ("PLANNING", ("PATIENTS_ID",)), ("PLANNING", ("KRN_MODIFY_DATE",)),
    ("PLANNING", ("PL_SUBJ_ID", "DATE_CONS")), ("PLANNING", ("SOURCE_PLANNING_ID",)),
    ("MOTCONSU", ("PLANNING_ID",)), ("MOTCONSU", ("PATIENTS_ID", "DATE_CONSULTATION")),
    ("MOTCONSU", ("KRN_MODIFY_DATE",)), ("MOTCONSU", ("DATE_CONSULTATION",)), ("FM_BILL", ("PATIENTS_ID", "BILL_DATE")),
    ("FM_BILL", ("BILL_DATE",)),
    ("FM_BILL", ("KRN_MODIFY_DATE",)), ("SMS_MESSAGES", ("REC_ID",)), ("PL_EXCL", ("PL_SUBJ_ID",)),
    ("PL_DAY", ("PL_AGEND_ID",)),
)
