"""spark-submit entry point for the `segment` stage: `spark-submit jobs/segment.py --config conf/cluster.yaml ...`."""

import sys

from crm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
