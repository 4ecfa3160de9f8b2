"""spark-submit entry point for the `generate` stage: `spark-submit jobs/generate.py --config conf/cluster.yaml ...`."""

import sys

from crm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
