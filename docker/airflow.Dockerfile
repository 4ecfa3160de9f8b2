# Airflow (compose profile "airflow") with crm-spark installed, so the DAG imports the stage
# declarations and its tasks run spark-submit against the compose cluster.
FROM apache/airflow:3.1.3-python3.11
USER root
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:root pyproject.toml README.md /opt/crm-spark/
COPY --chown=airflow:root crm_spark /opt/crm-spark/crm_spark
COPY --chown=airflow:root conf /opt/crm-spark/conf
COPY --chown=airflow:root jobs /opt/crm-spark/jobs
RUN pip install --no-cache-dir /opt/crm-spark
