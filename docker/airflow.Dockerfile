# Airflow (compose profile "airflow") with crm-spark installed, so the DAG imports the stage
# declarations and its tasks run spark-submit against the compose cluster, with the delta-spark
# jars of jvm/pom.xml in pyspark's jars/ as in the main image (conf/docker.yaml's engine).
FROM maven:3.9-eclipse-temurin-17 AS jars
COPY jvm/pom.xml /build/pom.xml
RUN mvn -B -q -f /build/pom.xml -P delta dependency:copy-dependencies -DincludeScope=runtime \
        -DincludeGroupIds=io.delta -DoutputDirectory=/build/delta

# The Airflow version tests/test_airflow.py runs the DAG with.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:root pyproject.toml README.md /opt/crm-spark/
COPY --chown=airflow:root crm_spark /opt/crm-spark/crm_spark
COPY --chown=airflow:root conf /opt/crm-spark/conf
COPY --chown=airflow:root jobs /opt/crm-spark/jobs
# Airflow pinned beside the package, so its resolver cannot move Airflow itself.
RUN pip install --no-cache-dir /opt/crm-spark "apache-airflow==3.3.2"
COPY --from=jars /build/delta/ /tmp/delta-jars/
RUN cp /tmp/delta-jars/*.jar "$(python -c 'import pathlib, pyspark; print(pathlib.Path(pyspark.__file__).parent / "jars")')"
