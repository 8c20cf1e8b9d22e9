"""
### ClinicFlow nightly pipeline

Runs every night in the clinic's time zone (Europe/Moscow unless `CLINICFLOW_TIMEZONE` says
otherwise). The run's **as-of date** is its logical date in clinic time, or the `as_of` parameter.

| task | what it does | where results land |
|---|---|---|
| `migrate` | applies pending schema migrations from `sql/migrations` | warehouse schemas |
| `health_check` | checks the warehouse, MLflow and every configured source | task log |
| `list_sources` | reads the configured source names (`CLINICFLOW_SOURCES`) at run time | XCom |
| `ingest` (per source) | extract, pseudonymise, mask after as-of, COPY | `staging`, `ops.load_batch` |
| `validate` (per source) | quarantine failing rows, critical checks, GX suite + Data Docs | `quarantine`, `gx/` |
| `load_core` (per source) | one transaction: upserts, deletes, watermarks | `core`, `ops.watermark` |
| `features` | point-in-time features of the horizon's bookings; training back-fill | `features.*` |
| `train` | when due: tune, validate, register `noshow`, champion gate | MLflow, `ml.training_run` |
| `score` | the horizon's bookings scored by `models:/noshow@champion`, 3 reasons each | `reporting.appointment_risk` |
| `overbooking_partitions` | the (source, branch) pairs with scored appointments | XCom |
| `optimise` (per branch) | OR-Tools optimiser: extras per slot, effect per day | `reporting.overbooking_slot`, `_day` |
| `publish` | consistency checks, the run's summary, statistics for BI | `reporting.nightly_summary` |

Scoring fails when there is no champion or it cannot be loaded (the log says what to do), except on a
new installation whose `train` task of the same run had too little history: then nothing is scored,
the task's log and XCom say why, and the optimisation and publishing find nothing to do.

Every task is idempotent for its as-of date: re-running a date replaces that date's results.
Each task calls one function that also runs from the `clinicflow` command line.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from dags.common import DEFAULT_ARGS, START_DATE, context_as_of
from dags.common.assets import warehouse_asset


@dag(
    dag_id="nightly",
    schedule="30 1 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["clinicflow", "nightly"],
    doc_md=__doc__,
    params={
        "as_of": Param(None, type=["null", "string"], format="date",
                       description="As-of date (YYYY-MM-DD); empty = the logical date in clinic time"),
        "force_train": Param(False, type="boolean",
                             description="Train even if the last training is younger than CLINICFLOW_TRAIN_EVERY_DAYS"),
        "training": Param({}, type="object",
                          description="Training options for this run only, e.g. {\"algorithms\": [\"lightgbm\"], "
                                      "\"trials\": 10} (see training/trainer.py TrainConfig)"),
    },
)
def nightly():
    @task(doc_md="Apply pending schema migrations (`clinicflow db upgrade`).")
    def migrate() -> list[str]:
        from clinicflow.migrations import upgrade

        return upgrade()

    @task(doc_md="Check warehouse, MLflow and sources (`clinicflow health`).")
    def health_check() -> list[dict]:
        from pipelines.health import as_dicts, run_health_check

        as_of = context_as_of(get_current_context())
        checks = run_health_check()
        return [dict(d, as_of=as_of.isoformat()) for d in as_dicts(checks)]

    @task(doc_md="Names of the configured sources (`CLINICFLOW_SOURCES`), read at run time; the ingest "
                 "tasks are mapped over them, one per source.")
    def list_sources() -> list[str]:
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.ingest import list_sources as configured

        names = configured()
        if not names:
            raise AirflowFailException("no sources configured: set CLINICFLOW_SOURCES (see .env.example)")
        return names

    @task(doc_md="Extract one source into staging: pseudonymise, mask outcomes after the as-of date, COPY "
                 "(`clinicflow ingest` does this and the next two steps). Returns the load batch id.",
          map_index_template="{{ source_name }}")
    def ingest(source_name: str) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import ConfigError, DataQualityError
        from pipelines.ingest import stage_source

        context = get_current_context()
        context["source_name"] = source_name  # type: ignore[typeddict-unknown-key]
        try:
            return stage_source(source_name, context_as_of(context), run_id=context["run_id"])
        except (DataQualityError, ConfigError) as exc:  # retrying cannot fix the input; an unreachable source can
            raise AirflowFailException(str(exc)) from exc

    @task(doc_md="Validate a staged batch: failing rows to quarantine.record, critical checks, the Great "
                 "Expectations suite; the Data Docs path is in the task log.",
          map_index_template="{{ source_name }}")
    def validate(staged: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import DataQualityError
        from pipelines.ingest import validate_batch

        get_current_context()["source_name"] = staged["source"]  # type: ignore[typeddict-unknown-key]
        try:
            return validate_batch(staged["batch_id"])
        except DataQualityError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(doc_md="Load a validated batch into core in one transaction (upserts, reconciliation deletes, "
                 "watermarks).", map_index_template="{{ source_name }}",
          outlets=[warehouse_asset("core", "appointment")])
    def load_core(validated: dict) -> dict:
        from pipelines.ingest import load_batch

        get_current_context()["source_name"] = validated["source"]  # type: ignore[typeddict-unknown-key]
        return load_batch(validated["batch_id"])

    @task(task_id="features", outlets=[warehouse_asset("features", "appointment_features")],
          doc_md="Point-in-time features as of the run's date for the booked appointments of the scoring horizon, "
                 "and the training rows no earlier run wrote (`clinicflow features build`).")
    def build_features() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import ClinicFlowError
        from features.build import run_features_stage

        try:
            return run_features_stage(context_as_of(get_current_context()))
        except ClinicFlowError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(task_id="train", doc_md="Retrain the no-show model when due, log the MLflow run, register a `noshow` "
                                  "version as `challenger` and promote it to `champion` only if it beats the champion "
                                  "(`clinicflow train`). Too little history: training is skipped, the log says why.")
    def train_model() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import ClinicFlowError
        from training.dataset import NotEnoughDataError
        from training.stage import run_training

        context = get_current_context()
        params = context.get("params") or {}
        as_of = context_as_of(context)
        try:
            return run_training(as_of, overrides=dict(params.get("training") or {}),
                                force=bool(params.get("force_train")))
        except NotEnoughDataError as exc:
            import logging

            logging.getLogger("training").warning("train: skipped as of %s: %s", as_of, exc)
            return {"as_of": as_of.isoformat(), "trained": False, "reason": str(exc)}
        except ClinicFlowError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(task_id="score", outlets=[warehouse_asset("reporting", "appointment_risk")],
          doc_md="Score the booked appointments of the horizon with `models:/noshow@champion`: probability, risk "
                 "band and the top three reasons in plain words (`clinicflow score`). Replaces the date's rows.")
    def score(trained: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import ClinicFlowError
        from scoring.stage import load_champion, run_scoring

        as_of = context_as_of(get_current_context())
        try:
            load_champion()
        except ClinicFlowError as exc:
            known_model = trained.get("champion_version") or trained.get("model_version")
            bootstrap = not trained.get("trained") and not known_model
            if bootstrap:  # a new installation: this run's training had too little history, as train said
                import logging

                reason = (f"nothing scored: there is no champion yet because this run's training was skipped "
                          f"({trained.get('reason')}); scoring starts once a model has been trained")
                logging.getLogger("scoring").warning("score: %s", reason)
                return {"as_of": as_of.isoformat(), "scored": False, "appointments_scored": 0, "reason": reason}
            raise AirflowFailException(str(exc)) from exc
        try:
            return run_scoring(as_of)
        except ClinicFlowError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(task_id="overbooking_partitions",
          doc_md="The (source, branch) pairs with scored appointments; `optimise` is mapped over them (one "
                 "`all` task that finds nothing to do when nothing was scored).")
    def overbooking_partitions(scored: dict) -> list[dict]:
        from optimization.stage import clear_stale_partitions, list_partitions

        as_of = context_as_of(get_current_context())
        clear_stale_partitions(as_of)
        found = [{"source": p["source"], "branch_id": p["branch_id"]} for p in list_partitions(as_of)]
        return found or [{"all": True}]

    @task(task_id="optimise", map_index_template="{{ partition_label }}",
          outlets=[warehouse_asset("reporting", "overbooking_day"), warehouse_asset("reporting", "overbooking_slot")],
          doc_md="Recommended extra bookings per slot for every resource-day of one branch: exact slot model, OR-Tools "
                 "CP-SAT neighbourhood search warm-started from greedy (`clinicflow optimize`).")
    def optimise(partition: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import ClinicFlowError
        from optimization.stage import run_optimisation

        context = get_current_context()
        label = "all" if partition.get("all") else f"{partition['source']}/{partition['branch_id']}"
        context["partition_label"] = label  # type: ignore[typeddict-unknown-key]
        try:
            return run_optimisation(context_as_of(context), partition, allow_empty=True)
        except ClinicFlowError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(task_id="publish", outlets=[warehouse_asset("reporting", "nightly_summary")],
          doc_md="Check the run's reporting rows, record its summary in `reporting.nightly_summary` and refresh "
                 "statistics for BI tools (`clinicflow next-week` prints the summary).")
    def publish(optimised: list[dict]) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import ClinicFlowError
        from optimization.publish import publish as publish_run

        try:
            return publish_run(context_as_of(get_current_context()))
        except ClinicFlowError as exc:
            raise AirflowFailException(str(exc)) from exc

    sources = list_sources()
    migrate() >> health_check() >> sources
    loaded = load_core.expand(validated=validate.expand(staged=ingest.expand(source_name=sources)))
    trained = train_model()
    loaded >> build_features() >> trained
    publish(optimise.expand(partition=overbooking_partitions(score(trained))))


nightly()
