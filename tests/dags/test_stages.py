"""The task factories shared by ``nightly`` and the chain: source selection, and a real run of the
chain: ``clinicflow_ingest`` with ``dag.test()``, then ``clinicflow_train`` and ``clinicflow_score``
in the runs Airflow's scheduler creates from the asset events (the as-of date travels in their extra)."""

from __future__ import annotations

from datetime import date

import pendulum
import pytest
import sqlalchemy as sa

from clinicflow.paths import DAGS_DIR
from dags.common.stages import selected_sources

AS_OF = date(2026, 11, 3)  # not the date test_nightly runs, so its rows cannot pass this test


def test_selected_sources_keep_configuration_order():
    assert selected_sources(["a", "b", "c"], []) == ["a", "b", "c"]
    assert selected_sources(["a", "b", "c"], None) == ["a", "b", "c"]
    assert selected_sources(["a", "b", "c"], ["c", "a"]) == ["a", "c"]


def test_unknown_sources_are_named():
    with pytest.raises(ValueError, match=r"unknown source\(s\) x, y; configured in CLINICFLOW_SOURCES: a, b"):
        selected_sources(["a", "b"], ["a", "x", "y"])


# --------------------------------------------------------------------------------------------------
# the chain, for real


def _dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR))
    assert bag.import_errors == {}
    return bag


def _states(run, session=None) -> dict[str, str]:
    tis = run.get_task_instances(session=session) if session is not None else run.get_task_instances()
    return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": ti.state for ti in tis}


def _asset_events(dag_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            sa.select(AssetModel.name, AssetEvent.extra, AssetEvent.source_task_id, AssetEvent.source_run_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_dag_id == dag_id).order_by(AssetEvent.id)).all()
    return [{"asset": r.name, "extra": r.extra, "task": r.source_task_id, "run_id": r.source_run_id} for r in rows]


def _queued_for(dag_id: str) -> int:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(AssetDagRunQueue)
                              .where(AssetDagRunQueue.target_dag_id == dag_id))


def sync_and_unpause(dag_ids: tuple[str, ...]) -> None:
    """Write the DAG folder to the metadata DB (as the DAG processor does) and unpause ``dag_ids``:
    Airflow queues runs only for consumers that are not paused."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        sync_bag_to_db(BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name),
                       bundle.name, bundle.version)
    with create_session() as session:
        session.execute(sa.update(DagModel).where(DagModel.dag_id.in_(dag_ids)).values(is_paused=False))


def run_asset_triggered(dag_id: str, bag) -> tuple[dict[str, str], object]:
    """What the scheduler does for a DAG whose assets were announced: create the asset-triggered run
    with its consumed events (Airflow's own scheduler code), then run its tasks in this process the way
    ``dag.test()`` does."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunType

    dag = bag.dags[dag_id]
    with create_session() as session:
        runner = SchedulerJobRunner(job=Job())
        runner._create_dag_runs_asset_triggered(dag_models=[session.get(DagModel, dag_id)], session=session)
        session.commit()
        run = session.scalars(sa.select(DagRun).where(DagRun.dag_id == dag_id,
                                                      DagRun.run_type == DagRunType.ASSET_TRIGGERED)
                              .order_by(DagRun.id.desc())).first()
        assert run is not None, f"the scheduler created no asset-triggered run of {dag_id}"
        assert run.logical_date is None and run.consumed_asset_events
        run.dag = runner._get_current_dag(dag_id=dag_id, session=session)
        run.state = DagRunState.RUNNING
        session.commit()
        for _ in range(100):
            if run.state != DagRunState.RUNNING:
                break
            session.expire_all()
            schedulable, _ = run.update_state(session=session)
            for ti in schedulable:
                ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            for ti in [t for t in run.get_task_instances(session=session) if t.state == TaskInstanceState.SCHEDULED]:
                _run_task(ti=ti, task=dag.task_dict[ti.task_id])
        return _states(run, session), run.state


@pytest.mark.slow
def test_the_chain_passes_the_as_of_date_through_asset_events(airflow_db, migrated_warehouse, tmp_path,
                                                              settings_env):
    from tests.pipelines.ingest_data import fhir_bundle, source_json, write_json

    path = write_json(tmp_path / "export.json", fhir_bundle(day=date(2026, 10, 30)))
    settings_env(sources=source_json("chain_fhir", "fhir", path))
    bag = _dagbag()
    sync_and_unpause(("clinicflow_train", "clinicflow_score"))

    # 1. ingestion, with the as-of date as a run parameter and a logical date of another day
    ingest = bag.dags["clinicflow_ingest"]
    run = ingest.test(logical_date=pendulum.datetime(2026, 11, 20, 1, 30, tz="Europe/Moscow"),
                      run_conf={"as_of": AS_OF.isoformat(), "sources": ["chain_fhir"]})
    states = _states(run)
    assert run.state == "success", states
    assert {"list_sources", "ingest[0]", "validate[0]", "load_core[0]"} <= set(states)
    events = [e for e in _asset_events("clinicflow_ingest") if e["run_id"] == run.run_id]
    assert [(e["asset"], e["task"], e["extra"]) for e in events] == [
        ("core.appointment", "load_core", {"as_of": AS_OF.isoformat(), "source": "chain_fhir"})]
    assert _queued_for("clinicflow_train") == 1  # the scheduler would start clinicflow_train now
    with migrated_warehouse.connect() as conn:
        assert conn.execute(sa.text("SELECT as_of FROM ops.load_batch WHERE source = 'chain_fhir' "
                                    "ORDER BY load_batch_id DESC LIMIT 1")).scalar() == AS_OF

    # 2. training, started by that event (on this tiny source: too little history, so skipped with a reason)
    states, state = run_asset_triggered("clinicflow_train", bag)
    assert state == "success", states
    assert set(states) == {"features", "train"}
    announced = _asset_events("clinicflow_train")
    champion = [e for e in announced if e["asset"] == "mlflow.noshow@champion"]
    assert len(champion) == 1 and champion[0]["extra"]["as_of"] == AS_OF.isoformat()
    outcome = champion[0]["extra"]
    assert isinstance(outcome["trained"], bool) and (outcome["trained"] or outcome["reason"])
    assert {e["extra"]["as_of"] for e in announced} == {AS_OF.isoformat()}
    # A new installation (the session's registry has no model, as when this file runs alone or first).
    bootstrap = outcome["trained"] is False and not outcome.get("model_version") and not outcome.get("champion_version")

    # 3. scoring, started by the champion's event: the as-of date and the training outcome travelled
    states, state = run_asset_triggered("clinicflow_score", bag)
    assert state == "success", states
    assert {"score", "overbooking_partitions", "publish"} <= set(states)
    scored = [e for e in _asset_events("clinicflow_score") if e["asset"] == "reporting.appointment_risk"]
    assert scored and scored[-1]["extra"] == {"as_of": AS_OF.isoformat(), **({"scored": False} if bootstrap else {})}
    published = [e for e in _asset_events("clinicflow_score") if e["asset"] == "reporting.nightly_summary"]
    assert [e["extra"] for e in published] == [{"as_of": AS_OF.isoformat()}]
    with migrated_warehouse.connect() as conn:
        summary = conn.execute(sa.text("SELECT appointments_scored FROM reporting.nightly_summary WHERE as_of = :d"),
                               {"d": AS_OF}).one()
    if bootstrap:
        assert summary.appointments_scored == 0
