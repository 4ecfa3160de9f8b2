"""spark-submit entry point for the `report` stage: `spark-submit jobs/report.py --config conf/cluster.yaml ...`."""

import sys

from crm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
