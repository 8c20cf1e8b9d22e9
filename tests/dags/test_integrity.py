"""DAG integrity: every DAG imports without error and follows the house rules."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clinicflow.paths import DAGS_DIR

HEAVY_MODULES = ("pandas", "numpy", "sklearn", "mlflow", "lightgbm", "xgboost", "great_expectations",
                 "ortools", "optuna", "shap", "clinicflow.db")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert "nightly" in dagbag.dag_ids


def test_every_dag_follows_house_rules(dagbag):
    assert dagbag.dags, "no DAGs found"
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md.strip()) > 80, f"{dag_id} has no real doc_md"
        assert dag.max_active_runs == 1, f"{dag_id} runs share state: max_active_runs must be 1"
        for task in dag.tasks:
            assert task.owner not in (None, "", "airflow"), f"{dag_id}.{task.task_id} has no owner"
            assert task.retries >= 2, f"{dag_id}.{task.task_id} has retries={task.retries}"
            assert task.execution_timeout is not None, f"{dag_id}.{task.task_id} has no execution_timeout"


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
