"""The stack proof: docker-compose.yaml's services as real processes on this machine's PostgreSQL and
RabbitMQ; the production chain clinicflow_ingest -> clinicflow_train -> clinicflow_score, its first DAG
triggered through Airflow's REST API and the others started by the scheduler from asset events,
checked end to end.

deploy/local_stack.py does the work (also runnable by hand); this test runs it and asserts the outcome.
"""

from __future__ import annotations

import os
import socket
from datetime import date

import pytest

pytestmark = pytest.mark.slow

#: Seconds for the whole proof (start, run, checks); the services are stopped on top of this.
BUDGET = float(os.environ.get("CLINICFLOW_STACK_PROOF_TIMEOUT", "420"))


AS_OF = date(2026, 11, 2)


def small_fhir_export(tmp_path) -> str:
    """A small FHIR export (as the DAG test uses), for when pipelines.demo configures no demo source."""
    from tests.pipelines.ingest_data import fhir_bundle, source_json, write_json

    path = write_json(tmp_path / "export.json", fhir_bundle(day=date(2026, 10, 30)))
    return source_json("stack_fhir", "fhir", path)


def rabbitmq_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=3):
            return True
    except OSError:
        return False


def test_the_chain_runs_on_the_compose_stack(local_stack, server_url, test_db_prefix, tmp_path):
    if not rabbitmq_up():
        message = "RabbitMQ is not running on 127.0.0.1:5672 (.ci/run starts it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if not server_url.host:  # the compose services reach PostgreSQL by host and port, as in containers
        message = ("the stack needs the test PostgreSQL over TCP (CLINICFLOW_TEST_DATABASE_URL, as .ci/run sets); "
                   "the embedded server listens on a Unix socket only")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = local_stack.run_proof(server_url, f"{test_db_prefix}_s", tmp_path / "stack", timeout=BUDGET,
                                   as_of=AS_OF, fallback_sources=small_fhir_export(tmp_path))
    print("stack proof timings (s):", {k: round(v, 1) for k, v in result.timings.items()})

    # Airflow's API and MLflow's registry refuse anonymous requests.
    assert result.unauthenticated_status == {"airflow": 401, "mlflow": 401}

    # clinicflow_ingest was triggered; the scheduler started clinicflow_train from load_core's asset
    # event and clinicflow_score from train's; each run found through the REST API succeeded.
    chain = local_stack.CHAIN
    print("runs:", result.run_ids, result.run_types)
    assert list(result.run_ids) == list(chain)
    assert result.run_types == {chain[0]: "manual", chain[1]: "asset_triggered", chain[2]: "asset_triggered"}

    # The as-of date travelled in the asset events' extra: the asset-triggered runs have no logical
    # date (today, not AS_OF, would be their fallback), yet every event of every run carries AS_OF and
    # the published summary is AS_OF's.
    print("as_of emitted:", result.emitted_as_of, "consumed:", result.consumed_as_of,
          "published:", result.published_as_of)
    assert date.today() != AS_OF
    for dag_id in chain:
        assert result.emitted_as_of[dag_id] and set(result.emitted_as_of[dag_id]) == {AS_OF.isoformat()}, dag_id
    for dag_id in chain[1:]:
        assert result.consumed_as_of[dag_id] and set(result.consumed_as_of[dag_id]) == {AS_OF.isoformat()}, dag_id
    assert AS_OF.isoformat() in result.published_as_of

    # Every task of every run succeeded, on the Celery worker. With the small fallback export (until
    # pipelines.demo provides the demo's sources) training has too little history and the stages
    # after it skip themselves with that reason; with the demo's sources every task must succeed.
    print("tasks:", result.task_states, "sources:", result.sources_origin)
    ingest = result.task_states[chain[0]]
    assert {"migrate", "health_check", "list_sources"} <= set(ingest)
    assert set(result.task_states[chain[1]]) == {"features", "train"}
    assert {"score", "overbooking_partitions", "publish"} <= set(result.task_states[chain[2]])
    allowed = {"success", "skipped"} if result.sources_origin == "fallback" else {"success"}
    failed = {f"{dag}.{task}": state for dag, states in result.task_states.items() for task, state in states.items()
              if state not in allowed}
    assert not failed, f"tasks not successful: {failed}"
    loaded = [t for t, state in ingest.items() if t.startswith("load_core") and state == "success"]
    assert loaded, "no source was loaded into core"
    assert result.failures_recorded == 0

    # Every warehouse table that a task announced as an Asset outlet (dags.common.assets.warehouse_asset)
    # exists, and every table of local_stack.MUST_BE_FILLED holds rows. With the demo's sources the
    # announced tables must hold rows too (the small fallback export has no appointments to score).
    print("announced or required tables (rows):", result.produced_rows)
    print("reporting tables (rows):", result.reporting_rows)
    assert set(local_stack.MUST_BE_FILLED) <= set(result.produced_rows)
    missing = {table: rows for table, rows in result.produced_rows.items() if rows < 0}
    assert not missing, f"tables announced as outlets but missing: {sorted(missing)}"
    must_fill = set(result.produced_rows) if result.sources_origin != "fallback" else set(local_stack.MUST_BE_FILLED)
    empty = {table: rows for table, rows in result.produced_rows.items() if table in must_fill and rows == 0}
    assert not empty, f"tables left empty by a successful run: {sorted(empty)}"

    # Database roles: the pipeline (not a superuser) migrated and wrote; BI reads reporting only.
    assert result.roles and all(result.roles.values()), result.roles
    assert "bi reads reporting" in result.roles

    # Monitoring: Airflow sent StatsD metrics that the exporter's mapping turns into the dashboards' series.
    from tests.deploy.test_monitoring import map_metric

    mapped = [m for m in map(map_metric, result.statsd_metrics) if m]
    names = {name for name, _ in mapped}
    assert {"airflow_scheduler_heartbeat_total", "airflow_ti_finish_total", "airflow_executor_open_slots"} <= names, \
        sorted(names)
    for dag_id, task_id in (("clinicflow_ingest", "migrate"), ("clinicflow_train", "train"),
                            ("clinicflow_score", "publish")):
        assert ("airflow_ti_finish_total", {"dag_id": dag_id, "task_id": task_id, "state": "success"}) in mapped

    # A worker's MLflow settings log artifacts through the server into its artifact store.
    assert result.artifact_probe.startswith("clinicflow/"), result.artifact_probe

    # The registry answered through MLflow's REST API; once the pipeline registers a model, it has a champion.
    # The demo's source has the history to train on: there the chain must have registered a champion.
    if result.sources_origin == "demo":
        assert result.registered_models, "the chain ran on the demo's source but registered no model"
    if result.registered_models:
        assert result.champion is not None, f"models {result.registered_models} registered but none is @champion"
        assert result.champion["name"] in result.registered_models
        assert "champion" in result.champion.get("aliases", [])
