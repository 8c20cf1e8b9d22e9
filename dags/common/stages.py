"""The tasks of ClinicFlow's DAGs, built by factories so that every DAG runs the same tasks.

``nightly`` (one DAG, the quick start and backfills) and the production chain ``clinicflow_ingest`` →
``clinicflow_train`` → ``clinicflow_score`` (linked by Airflow Assets) call the same factories; only
``emit_assets`` differs. With ``emit_assets=True`` the tasks declare the warehouse tables (or the
model alias) they write as outlets, and every asset event carries ``{"as_of": "YYYY-MM-DD", ...}`` in
its extra, which is how an asset-triggered run (that has no meaningful logical date) learns its
as-of date (:func:`dags.common.context_as_of`). ``nightly`` uses ``emit_assets=False``: a one-DAG run
must not trigger the chain.

Call a factory inside a DAG definition; it returns the XComArg that the next stage depends on.
Task bodies import their stage function inside, so parsing stays cheap.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, Param, get_current_context, task

from dags.common import context_as_of
from dags.common.assets import model_asset, warehouse_asset

CORE_APPOINTMENT = warehouse_asset("core", "appointment")
FEATURES = warehouse_asset("features", "appointment_features")
CHAMPION = model_asset("noshow", "champion")
APPOINTMENT_RISK = warehouse_asset("reporting", "appointment_risk")
OVERBOOKING = (warehouse_asset("reporting", "overbooking_day"), warehouse_asset("reporting", "overbooking_slot"))
NIGHTLY_SUMMARY = warehouse_asset("reporting", "nightly_summary")

#: Fields of the training summary that travel to ``clinicflow_score`` in the champion's asset event.
TRAINING_EXTRA = ("as_of", "trained", "promoted", "model_version", "champion_version", "reason")


# --------------------------------------------------------------------------------------------------
# run parameters


def as_of_param(asset_triggered: bool = False) -> Param:
    fallback = ("the as-of date in the asset event that started the run, else today in clinic time"
                if asset_triggered else "the run's logical date in clinic time")
    return Param(None, type=["null", "string"], format="date",
                 description=f"As-of date (YYYY-MM-DD); empty = {fallback}")


def sources_param() -> Param:
    return Param([], type="array", items={"type": "string"},
                 description="Source names to ingest (from CLINICFLOW_SOURCES); empty = every configured source")


def training_params() -> dict[str, Param]:
    return {
        "force_train": Param(False, type="boolean",
                             description="Train even if the last training is younger than CLINICFLOW_TRAIN_EVERY_DAYS"),
        "training": Param({}, type="object",
                          description="Training options for this run only, e.g. {\"algorithms\": [\"lightgbm\"], "
                                      "\"trials\": 10} (see training/trainer.py TrainConfig)"),
    }


# --------------------------------------------------------------------------------------------------
# helpers used inside task bodies


def announce(context: Any, assets: tuple[Asset, ...] | list[Asset], as_of: Any, **extra: Any) -> None:
    """Put ``{"as_of": ..., **extra}`` into the extra of this task's asset events (its outlets)."""
    payload = {"as_of": as_of.isoformat() if hasattr(as_of, "isoformat") else str(as_of)}
    payload.update({k: v for k, v in extra.items() if v is not None})
    for asset in assets:
        context["outlet_events"][asset].extra = dict(payload)


def selected_sources(configured: list[str], requested: list[str] | None) -> list[str]:
    """The configured sources a run ingests: those ``requested`` (in configuration order), or all.

    An unknown name is a ``ValueError`` that names it and the configured ones.
    """
    wanted = [str(name) for name in (requested or [])]
    unknown = [name for name in wanted if name not in configured]
    if unknown:
        raise ValueError(f"run parameter sources names unknown source(s) {', '.join(unknown)}; configured in "
                         f"CLINICFLOW_SOURCES: {', '.join(configured) or 'none'}")
    return [name for name in configured if not wanted or name in wanted]


def _outlets(emit_assets: bool, *assets: Asset) -> list[Asset]:
    return list(assets) if emit_assets else []


# --------------------------------------------------------------------------------------------------
# ingestion: migrate -> health_check -> list_sources -> ingest / validate / load_core per source


def ingestion_tasks(emit_assets: bool):
    """Build the ingestion tasks; returns the mapped ``load_core`` XComArg.

    With ``emit_assets`` every ``load_core`` (one per source) announces ``core.appointment`` with the
    run's as-of date and the source in its event's extra.
    """

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

    @task(doc_md="Names of the configured sources (`CLINICFLOW_SOURCES`), read at run time, or those of the run "
                 "parameter `sources`; the ingest tasks are mapped over them, one per source.")
    def list_sources() -> list[str]:
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.ingest import list_sources as configured

        names = configured()
        if not names:
            raise AirflowFailException("no sources configured: set CLINICFLOW_SOURCES (see .env.example)")
        params = get_current_context().get("params") or {}
        try:
            return selected_sources(names, params.get("sources"))
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc

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
                 "watermarks)." + (" Announces `core.appointment` with the as-of date (starts "
                                    "`clinicflow_train`)." if emit_assets else ""),
          map_index_template="{{ source_name }}", outlets=_outlets(emit_assets, CORE_APPOINTMENT))
    def load_core(validated: dict) -> dict:
        from pipelines.ingest import load_batch

        context = get_current_context()
        context["source_name"] = validated["source"]  # type: ignore[typeddict-unknown-key]
        summary = load_batch(validated["batch_id"])
        if emit_assets:
            announce(context, [CORE_APPOINTMENT], context_as_of(context), source=validated["source"])
        return summary

    sources = list_sources()
    migrate() >> health_check() >> sources
    return load_core.expand(validated=validate.expand(staged=ingest.expand(source_name=sources)))


# --------------------------------------------------------------------------------------------------
# features and training: features -> train


def training_tasks(emit_assets: bool):
    """Build ``features`` >> ``train``; returns ``(features, train)`` XComArgs.

    With ``emit_assets`` ``train`` announces ``mlflow.noshow@champion`` with the as-of date and the
    training outcome (trained, promoted, model and champion versions, the reason when skipped).
    """

    @task(task_id="features", outlets=_outlets(emit_assets, FEATURES),
          doc_md="Point-in-time features: the training rows no earlier run wrote (each appointment with an outcome "
                 "as of its own day) and retention (`clinicflow features build`). The horizon's rows are computed "
                 "and stored by `score`.")
    def build_features() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import ClinicFlowError
        from features.build import run_features_stage

        context = get_current_context()
        as_of = context_as_of(context)
        try:
            summary = run_features_stage(as_of)
        except ClinicFlowError as exc:
            raise AirflowFailException(str(exc)) from exc
        if emit_assets:
            announce(context, [FEATURES], as_of)
        return summary

    @task(task_id="train", outlets=_outlets(emit_assets, CHAMPION),
          doc_md="Retrain the no-show model when due, log the MLflow run, register a `noshow` version as "
                 "`challenger` and promote it to `champion` only if it beats the champion (`clinicflow train`). "
                 "Too little history: training is skipped, the log says why."
                 + (" Announces `mlflow.noshow@champion` with the as-of date and the outcome (starts "
                    "`clinicflow_score`)." if emit_assets else ""))
    def train_model() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import ClinicFlowError
        from training.dataset import NotEnoughDataError
        from training.stage import run_training

        context = get_current_context()
        params = context.get("params") or {}
        as_of = context_as_of(context)
        try:
            summary = run_training(as_of, overrides=dict(params.get("training") or {}),
                                   force=bool(params.get("force_train")))
        except NotEnoughDataError as exc:
            import logging

            logging.getLogger("training").warning("train: skipped as of %s: %s", as_of, exc)
            summary = {"as_of": as_of.isoformat(), "trained": False, "reason": str(exc)}
        except ClinicFlowError as exc:
            raise AirflowFailException(str(exc)) from exc
        if emit_assets:
            outcome = {k: summary.get(k) for k in TRAINING_EXTRA if k != "as_of"}
            if isinstance(outcome.get("reason"), str):
                outcome["reason"] = outcome["reason"][:500]
            announce(context, [CHAMPION], as_of, **outcome)
        return summary

    features = build_features()
    trained = train_model()
    features >> trained
    return features, trained


# --------------------------------------------------------------------------------------------------
# scoring and optimisation: score -> overbooking_partitions -> optimise per branch -> publish


def scoring_tasks(emit_assets: bool, trained: Any = None):
    """Build ``score`` >> ``overbooking_partitions`` >> ``optimise`` (mapped) >> ``publish``.

    ``trained`` is the ``train`` task's XComArg in a one-DAG run; without it (``clinicflow_score``)
    ``score`` reads the training outcome from the extra of the champion's asset event that triggered
    the run. Returns the ``publish`` XComArg.
    """

    @task(task_id="score", outlets=_outlets(emit_assets, APPOINTMENT_RISK),
          doc_md="Score the booked appointments of the horizon with `models:/noshow@champion`: probability, risk "
                 "band and the top three reasons in plain words (`clinicflow score`). Replaces the date's rows.")
    def score(trained: dict | None = None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import ClinicFlowError
        from dags.common import triggering_extra
        from scoring.stage import load_champion, run_scoring

        context = get_current_context()
        as_of = context_as_of(context)
        if trained is None:  # clinicflow_score: the outcome travelled in the champion's asset event
            trained = triggering_extra(context, CHAMPION, key="trained")
        try:
            load_champion()
        except ClinicFlowError as exc:
            known_model = trained.get("champion_version") or trained.get("model_version")
            bootstrap = trained.get("trained") is False and not known_model
            if bootstrap:  # a new installation: the training of this as-of date had too little history
                import logging

                reason = (f"nothing scored: there is no champion yet because this run's training was skipped "
                          f"({trained.get('reason')}); scoring starts once a model has been trained")
                logging.getLogger("scoring").warning("score: %s", reason)
                summary = {"as_of": as_of.isoformat(), "scored": False, "appointments_scored": 0, "reason": reason}
                if emit_assets:
                    announce(context, [APPOINTMENT_RISK], as_of, scored=False)
                return summary
            raise AirflowFailException(str(exc)) from exc
        try:
            summary = run_scoring(as_of)
        except ClinicFlowError as exc:
            raise AirflowFailException(str(exc)) from exc
        if emit_assets:
            announce(context, [APPOINTMENT_RISK], as_of)
        return summary

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
          outlets=_outlets(emit_assets, *OVERBOOKING),
          doc_md="Recommended extra bookings per slot for every resource-day of one branch: exact slot model, OR-Tools "
                 "CP-SAT neighbourhood search warm-started from greedy (`clinicflow optimize`).")
    def optimise(partition: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import ClinicFlowError
        from optimization.stage import run_optimisation

        context = get_current_context()
        label = "all" if partition.get("all") else f"{partition['source']}/{partition['branch_id']}"
        context["partition_label"] = label  # type: ignore[typeddict-unknown-key]
        as_of = context_as_of(context)
        try:
            summary = run_optimisation(as_of, partition, allow_empty=True)
        except ClinicFlowError as exc:
            raise AirflowFailException(str(exc)) from exc
        if emit_assets:
            announce(context, OVERBOOKING, as_of, partition=label)
        return summary

    @task(task_id="publish", outlets=_outlets(emit_assets, NIGHTLY_SUMMARY),
          doc_md="Check the run's reporting rows, record its summary in `reporting.nightly_summary` and refresh "
                 "statistics for BI tools (`clinicflow next-week` prints the summary).")
    def publish(optimised: list[dict]) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from clinicflow.errors import ClinicFlowError
        from optimization.publish import publish as publish_run

        context = get_current_context()
        as_of = context_as_of(context)
        try:
            summary = publish_run(as_of)
        except ClinicFlowError as exc:
            raise AirflowFailException(str(exc)) from exc
        if emit_assets:
            announce(context, [NIGHTLY_SUMMARY], as_of)
        return summary

    scored = score(trained) if trained is not None else score()
    return publish(optimise.expand(partition=overbooking_partitions(scored)))
