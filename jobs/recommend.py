"""spark-submit entry point for the `recommend` stage: `spark-submit jobs/recommend.py --config conf/cluster.yaml ...`."""

import sys

from crm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["recommend", *sys.argv[1:]]))
