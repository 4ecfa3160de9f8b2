"""spark-submit entry point for the whole pipeline (`crm-spark run`) in one Spark application."""

import sys

from crm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
