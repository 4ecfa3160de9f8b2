"""spark-submit entry point for the `basket` stage: `spark-submit jobs/basket.py --config conf/cluster.yaml ...`."""

import sys

from crm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["basket", *sys.argv[1:]]))
