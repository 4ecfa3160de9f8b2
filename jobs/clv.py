"""spark-submit entry point for the `clv` stage: `spark-submit jobs/clv.py --config conf/cluster.yaml ...`."""

import sys

from crm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["clv", *sys.argv[1:]]))
