# ClinicFlow's image: the official Airflow image with the project installed from the lock file.
# Every ClinicFlow service of docker-compose.yaml runs it with a role (python -m clinicflow.services).
#
#   docker compose build                  # or: docker build -t clinicflow:local .
#
# The base image's Airflow version and Python must match the lock file (a test checks): Airflow
# comes from requirements/py312.txt at exactly the version the image ships.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.12
FROM ${AIRFLOW_IMAGE}

USER root
# libgomp1: the OpenMP runtime of LightGBM and XGBoost. curl: the compose health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 curl \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /opt/clinicflow /mlflow/artifacts /opt/airflow/clinicflow \
    && chown -R airflow:0 /opt/clinicflow /mlflow /opt/airflow/clinicflow

USER airflow
WORKDIR /opt/clinicflow
# Dependencies first (a layer that changes only with the lock file), then the project itself.
COPY --chown=airflow:0 requirements/py312.txt requirements/py312.txt
RUN pip install --no-cache-dir --requirement requirements/py312.txt
COPY --chown=airflow:0 . .
RUN pip install --no-cache-dir --no-deps --editable . && pip check

ENV CLINICFLOW_PROJECT_DIR=/opt/clinicflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/clinicflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    CLINICFLOW_HOME=/opt/airflow/clinicflow \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

WORKDIR /opt/airflow
# dumb-init forwards signals (warm shutdown of Celery workers); clinicflow.services checks the
# secrets (production refuses example ones) and then becomes the role's process.
ENTRYPOINT ["/usr/bin/dumb-init", "--", "python", "-m", "clinicflow.services"]
CMD ["check"]
