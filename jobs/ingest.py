"""spark-submit entry point for the `ingest` stage: `spark-submit jobs/ingest.py --config conf/cluster.yaml ...`."""

import sys

from crm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
