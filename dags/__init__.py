"""Airflow DAGs. Each DAG file only wires tasks; every task calls one function of the stage packages."""
