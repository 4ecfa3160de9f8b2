"""spark-submit entry point for the `churn` stage: `spark-submit jobs/churn.py --config conf/cluster.yaml ...`."""

import sys

from crm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["churn", *sys.argv[1:]]))
