"""DAG integrity: every DAG imports without error, follows the house rules, and the production chain
is wired by Assets the way its doc says."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from clinicflow.paths import DAGS_DIR

HEAVY_MODULES = ("pandas", "numpy", "sklearn", "mlflow", "lightgbm", "xgboost", "great_expectations",
                 "ortools", "optuna", "shap", "clinicflow.db")
DAG_IDS = {"nightly", "clinicflow_ingest", "clinicflow_train", "clinicflow_score"}
CHAIN = ("clinicflow_ingest", "clinicflow_train", "clinicflow_score")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert set(dagbag.dag_ids) >= DAG_IDS, dagbag.dag_ids


def test_every_dag_follows_house_rules(dagbag):
    assert dagbag.dags, "no DAGs found"
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags and "clinicflow" in dag.tags, f"{dag_id} has no clinicflow tag"
        assert dag.doc_md and len(dag.doc_md.strip()) > 80, f"{dag_id} has no real doc_md"
        assert "|" in dag.doc_md, f"{dag_id}'s doc_md has no table of its tasks and where results land"
        assert dag.max_active_runs == 1, f"{dag_id} runs share state: max_active_runs must be 1"
        assert not dag.catchup, f"{dag_id} would catch up on every missed night; backfill instead"
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            assert task.owner not in (None, "", "airflow"), f"{where} has no owner"
            assert task.retries >= 2, f"{where} has retries={task.retries}"
            assert task.retry_exponential_backoff, f"{where} retries without exponential back-off"
            assert task.execution_timeout is not None and task.execution_timeout > timedelta(0), \
                f"{where} has no execution_timeout"
            assert task.on_failure_callback, f"{where} has no failure callback"
            assert task.doc_md, f"{where} has no doc_md"


def test_schedules(dagbag):
    from airflow.sdk import CronTriggerTimetable

    from dags.common import TIMEZONE

    ingest = dagbag.dags["clinicflow_ingest"].timetable
    assert isinstance(ingest, CronTriggerTimetable)
    assert ingest.expression == "30 1 * * *" and str(ingest.timezone) == str(TIMEZONE)
    assert dagbag.dags["nightly"].schedule is None
    assert {"as_of", "sources"} <= set(dagbag.dags["clinicflow_ingest"].params)
    assert {"as_of", "sources", "force_train", "training"} <= set(dagbag.dags["nightly"].params)
    assert {"as_of", "force_train", "training"} <= set(dagbag.dags["clinicflow_train"].params)
    assert "as_of" in dagbag.dags["clinicflow_score"].params


def _schedule_assets(dag) -> set[str]:
    condition = getattr(dag.timetable, "asset_condition", None)
    assert condition is not None, f"{dag.dag_id} is not scheduled on assets"
    return {asset.uri for asset in condition.objects}


def _outlets(dag, task_id: str) -> set[str]:
    return {asset.uri for asset in dag.get_task(task_id).outlets}


def test_chain_is_linked_by_assets(dagbag):
    """clinicflow_train waits for what load_core announces; clinicflow_score for what train announces."""
    from dags.common.assets import model_asset, warehouse_asset

    ingest, train, score = (dagbag.dags[d] for d in CHAIN)
    core = warehouse_asset("core", "appointment").uri
    champion = model_asset("noshow", "champion").uri
    assert _outlets(ingest, "load_core") == {core}
    assert _schedule_assets(train) == {core}
    assert _outlets(train, "train") == {champion}
    assert _schedule_assets(score) == {champion}
    announced = {uri for d in (ingest, train, score) for t in d.tasks for uri in _outlets(d, t.task_id)}
    assert {"clinicflow://warehouse/reporting/appointment_risk", "clinicflow://warehouse/reporting/nightly_summary",
            "clinicflow://warehouse/reporting/overbooking_day",
            "clinicflow://warehouse/reporting/overbooking_slot"} <= announced


def test_nightly_declares_no_outlets(dagbag):
    """A one-DAG run must not trigger the chain (or announce anything)."""
    nightly = dagbag.dags["nightly"]
    assert {t.task_id: t.outlets for t in nightly.tasks if t.outlets} == {}


def test_nightly_runs_the_same_tasks_as_the_chain(dagbag):
    nightly = dagbag.dags["nightly"]
    chain = [dagbag.dags[d] for d in CHAIN]
    assert set(nightly.task_ids) == {t for d in chain for t in d.task_ids}
    # Inside each DAG the order is the same; nightly adds the links between the stages.
    for dag in chain:
        for task in dag.tasks:
            assert task.upstream_task_ids <= nightly.get_task(task.task_id).upstream_task_ids
    assert nightly.get_task("features").upstream_task_ids == {"load_core"}
    assert nightly.get_task("score").upstream_task_ids == {"train"}
    for task in nightly.tasks:
        assert task.doc_md and task.doc_md in "".join(
            d.get_task(task.task_id).doc_md for d in chain if task.task_id in d.task_ids)


@pytest.mark.parametrize("path", sorted(p.name for p in DAGS_DIR.glob("*.py") if p.name != "__init__.py"))
def test_dag_files_have_no_heavy_top_level_imports(path):
    """Parsing a DAG file must stay cheap: no pandas, ML libraries or database access at import time."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(DAGS_DIR / path)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert loaded == "", f"{path} imports heavy modules at top level: {loaded}"
