#!/usr/bin/env bash
# Creates ClinicFlow's databases and login roles on a fresh PostgreSQL. Idempotent.
#
# docker-compose mounts it into /docker-entrypoint-initdb.d/, so the postgres image runs it once, on
# the first start with an empty data volume. The CI proof (deploy/local_stack.py) runs the same
# script against the machine's PostgreSQL with test names. Every name and password comes from the
# environment (see .env.example); psql connects as $PGUSER / ${POSTGRES_USER:-postgres}.
#
#   database                 owner (login role)      used by
#   ${CLINICFLOW_DB_NAME}        ${CLINICFLOW_DB_USER}       the pipeline (warehouse; it runs the migrations)
#   ${CLINICFLOW_DB_NAME}_optuna ${CLINICFLOW_DB_USER}       Optuna studies of the training stage
#   ${AIRFLOW_DB_NAME}           ${AIRFLOW_DB_USER}          Airflow metadata and Celery results
#   ${MLFLOW_DB_NAME}            ${MLFLOW_DB_USER}           MLflow tracking and model registry
#   ${MLFLOW_AUTH_DB_NAME}       ${MLFLOW_DB_USER}           MLflow users and permissions (basic auth)
#   login roles without a database: ${GRAFANA_DB_USER} (Grafana), ${BI_DB_USER} (BI tools)
#
# Group roles (NOLOGIN), also created by migrations 0030 and 0022 when missing, so that the pipeline's
# user needs no CREATEROLE: clinicflow_writer (writes the pipeline schemas), clinicflow_monitor (reads
# ops and reporting) and clinicflow_bi (reads reporting only). ${GRAFANA_DB_USER} logs in as a member
# of clinicflow_monitor (Grafana's pipeline dashboard), ${BI_DB_USER} as a member of clinicflow_bi
# (Superset, Metabase, DataLens).
set -euo pipefail

: "${CLINICFLOW_DB_NAME:=clinicflow}" "${CLINICFLOW_DB_USER:=clinicflow}"
: "${AIRFLOW_DB_NAME:=airflow}" "${AIRFLOW_DB_USER:=airflow}"
: "${MLFLOW_DB_NAME:=mlflow}" "${MLFLOW_AUTH_DB_NAME:=mlflow_auth}" "${MLFLOW_DB_USER:=mlflow}"
: "${GRAFANA_DB_USER:=grafana_reader}" "${BI_DB_USER:=bi_reader}"
for variable in CLINICFLOW_DB_PASSWORD AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD GRAFANA_DB_PASSWORD BI_DB_PASSWORD; do
    if [[ -z "${!variable:-}" ]]; then
        echo "init-databases.sh: $variable is not set (see .env.example)" >&2
        exit 2
    fi
done

psql_admin() {
    psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${PGUSER:-${POSTGRES_USER:-postgres}}" \
        --dbname "${POSTGRES_DB:-postgres}" "$@"
}

echo "init-databases.sh: roles"
psql_admin \
    -v pipeline_user="$CLINICFLOW_DB_USER" -v pipeline_password="$CLINICFLOW_DB_PASSWORD" \
    -v airflow_user="$AIRFLOW_DB_USER" -v airflow_password="$AIRFLOW_DB_PASSWORD" \
    -v mlflow_user="$MLFLOW_DB_USER" -v mlflow_password="$MLFLOW_DB_PASSWORD" \
    -v grafana_user="$GRAFANA_DB_USER" -v grafana_password="$GRAFANA_DB_PASSWORD" \
    -v bi_user="$BI_DB_USER" -v bi_password="$BI_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I NOLOGIN', name)
FROM unnest(ARRAY['clinicflow_writer', 'clinicflow_monitor', 'clinicflow_bi']) AS name
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) \gexec

SELECT format('CREATE ROLE %I LOGIN', name)
FROM unnest(ARRAY[:'pipeline_user', :'airflow_user', :'mlflow_user', :'grafana_user', :'bi_user']) AS name
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) \gexec

SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'pipeline_user', :'pipeline_password') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'airflow_user', :'airflow_password') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'mlflow_user', :'mlflow_password') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'grafana_user', :'grafana_password') \gexec
SELECT format('GRANT clinicflow_writer TO %I', :'pipeline_user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'bi_user', :'bi_password') \gexec
SELECT format('GRANT clinicflow_monitor TO %I', :'grafana_user') \gexec
SELECT format('GRANT clinicflow_bi TO %I', :'bi_user') \gexec
SQL

create_database() {  # name owner
    psql_admin -v name="$1" -v owner="$2" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'owner')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'name') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', :'name', :'owner') \gexec
SQL
    echo "init-databases.sh: database $1 (owner $2)"
}

create_database "$CLINICFLOW_DB_NAME" "$CLINICFLOW_DB_USER"
create_database "${CLINICFLOW_DB_NAME}_optuna" "$CLINICFLOW_DB_USER"
create_database "$AIRFLOW_DB_NAME" "$AIRFLOW_DB_USER"
create_database "$MLFLOW_DB_NAME" "$MLFLOW_DB_USER"
create_database "$MLFLOW_AUTH_DB_NAME" "$MLFLOW_DB_USER"

# Grafana and BI tools read the warehouse (what the migrations grant clinicflow_monitor and clinicflow_bi).
psql_admin -v name="$CLINICFLOW_DB_NAME" <<'SQL'
SELECT format('GRANT CONNECT ON DATABASE %I TO clinicflow_writer, clinicflow_monitor, clinicflow_bi', :'name') \gexec
SQL
# PostgreSQL 15+ no longer lets every user create objects in public; Airflow and MLflow own their
# databases (and so their public schema) already.
echo "init-databases.sh: done"
