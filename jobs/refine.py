"""spark-submit entry point for the `refine` stage: `spark-submit jobs/refine.py --config conf/cluster.yaml ...`."""

import sys

from crm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["refine", *sys.argv[1:]]))
