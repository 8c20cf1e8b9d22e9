"""The monitoring profile: StatsD mapping, Prometheus config, Grafana data sources and dashboards."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
PROM_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def mappings() -> list[dict]:
    return yaml.safe_load((MONITORING / "statsd-mapping.yml").read_text())["mappings"]


def map_metric(name: str) -> tuple[str, dict[str, str]] | None:
    """What statsd_exporter makes of ``name`` with our glob mappings (first match wins; None = dropped)."""
    parts = name.split(".")
    for rule in mappings():
        pattern = rule["match"].split(".")
        if len(pattern) != len(parts):
            continue
        captures = []
        for want, got in zip(pattern, parts, strict=True):
            if want == "*":
                captures.append(got)
            elif want != got:
                break
        else:
            if rule.get("action") == "drop":
                return None

            def fill(text: str, captures=captures) -> str:
                return re.sub(r"\$(\d+)", lambda m: captures[int(m.group(1)) - 1], text)

            return fill(rule["name"]), {k: fill(v) for k, v in (rule.get("labels") or {}).items()}
    return re.sub(r"[^a-zA-Z0-9_]", "_", name), {}  # the exporter's default for unmapped names


def dashboard_queries() -> list[tuple[str, dict]]:
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                found.append((f"{path.name}:{panel['title']}", target))
    return found


def test_mapping_rules_are_well_formed():
    for rule in mappings():
        assert rule["match"].startswith("airflow."), rule
        if rule.get("action") != "drop":
            assert PROM_NAME.match(rule["name"].replace("$1", "x")), rule
            for label in (rule.get("labels") or {}):
                assert PROM_NAME.match(label), rule


@pytest.mark.parametrize(("statsd", "metric", "labels"), [
    ("airflow.ti.finish.nightly.health_check.success", "airflow_ti_finish_total",
     {"dag_id": "nightly", "task_id": "health_check", "state": "success"}),
    ("airflow.dag.nightly.train.duration", "airflow_task_duration_seconds", {"dag_id": "nightly", "task_id": "train"}),
    ("airflow.dagrun.duration.failed.nightly", "airflow_dagrun_duration_seconds",
     {"state": "failed", "dag_id": "nightly"}),
    ("airflow.executor.open_slots.CeleryExecutor", "airflow_executor_open_slots", {"executor": "CeleryExecutor"}),
    ("airflow.pool.running_slots.default_pool", "airflow_pool_running_slots", {"pool": "default_pool"}),
    ("airflow.ti.queued.default.nightly.migrate", "airflow_ti_state",
     {"state": "queued", "queue": "default", "dag_id": "nightly", "task_id": "migrate"}),
    ("airflow.scheduler_heartbeat", "airflow_scheduler_heartbeat_total", {}),
])
def test_airflow_metrics_map_to_labelled_prometheus_metrics(statsd, metric, labels):
    assert map_metric(statsd) == (metric, labels)


@pytest.mark.parametrize("duplicate", ["airflow.ti.finish", "airflow.dagrun.duration.success",
                                       "airflow.executor.open_slots", "airflow.task.duration"])
def test_unlabelled_duplicates_are_dropped(duplicate):
    assert map_metric(duplicate) is None


def test_every_legacy_airflow_metric_we_chart_is_mapped():
    """Render Airflow's own metric registry with sample values: the names our mapping expects exist."""
    import airflow

    registry = Path(airflow.__file__).parent / "_shared" / "observability" / "metrics" / "metrics_template.yaml"
    entries = yaml.safe_load(registry.read_text())
    entries = entries if isinstance(entries, list) else entries["metrics"]
    sample = {"dag_id": "nightly", "task_id": "migrate", "state": "success", "executor_class_name": "CeleryExecutor",
              "pool_name": "default_pool", "queue": "default", "hostname": "h", "job_name": "scheduler",
              "operator_name": "PythonOperator", "bundle_name": "dags-folder", "file_name": "nightly__py",
              "task_type": "PythonOperator", "job_id": "1", "return_code": "0", "worker_name": "w"}
    class Sample(dict):
        def __missing__(self, key: str) -> str:
            return "x"

    sample = Sample(sample)
    produced = set()
    for entry in entries:
        legacy = entry.get("legacy_name")
        name = legacy if legacy and legacy != "-" else entry["name"]
        mapped = map_metric("airflow." + name.format_map(sample))
        if mapped:
            produced.add(mapped[0])
    charted = set()
    for _, target in dashboard_queries():
        if "expr" in target:
            charted |= {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"airflow_[a-z_]+", target["expr"])}
    assert charted, "the dashboards chart no Airflow metric"
    assert charted <= produced, f"charted but never produced: {sorted(charted - produced)}"


def test_dashboards_use_provisioned_data_sources():
    provisioned = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/clinicflow.yml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"]}
    assert uids == {"prometheus", "warehouse"}
    seen = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in seen
        seen.add(dashboard["uid"])
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] in uids, (path.name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids
    assert {"clinicflow-airflow", "clinicflow-pipeline"} <= seen


def test_prometheus_scrapes_the_statsd_exporter():
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert "statsd-exporter:9102" in targets
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    assert "--web.listen-address=:9102" in compose["services"]["statsd-exporter"]["command"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_config_and_every_query(tmp_path):
    result = subprocess.run(["promtool", "check", "config", str(MONITORING / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"clinicflow:query_{i}", "expr": target["expr"]}
        for i, (_, target) in enumerate(dashboard_queries()) if "expr" in target]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yml")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_warehouse_queries_run_as_the_monitor_role(migrated_warehouse):
    """Every SQL panel runs on the real warehouse with only clinicflow_monitor's privileges."""
    queries = [(where, t["rawSql"]) for where, t in dashboard_queries() if "rawSql" in t]
    assert len(queries) >= 3
    with migrated_warehouse.connect() as conn:
        conn.execute(sa.text("SET ROLE clinicflow_monitor"))
        for _where, query in queries:
            sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 > now() - interval '7 days'", query)
            conn.execute(sa.text(sql)).all()  # raises on a syntax or permission error
        conn.execute(sa.text("RESET ROLE"))
