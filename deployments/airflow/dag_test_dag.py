"""The DAG file deployments/airflow/dag-test.sh runs: the DAG flows.airflow.dags() makes for the
one source it names (MEMOS_ETL_DAG_SOURCE, MEMOS_ETL_DAG_CONFIG, MEMOS_ETL_DAG_WORK_DIR), not
scheduled. Run as a script it prints that DAG's id."""

from __future__ import annotations

import os

from flows.airflow import dags

made = dags(
    os.environ.get("MEMOS_ETL_DAG_CONFIG") or None,
    sources=[os.environ["MEMOS_ETL_DAG_SOURCE"]],
    default_schedule=None,
    work_dir=os.environ.get("MEMOS_ETL_DAG_WORK_DIR") or None,
    retries=0,
)
globals().update(made)

if __name__ == "__main__":
    print(next(iter(made)))
