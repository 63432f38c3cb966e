"""An Airflow DAG: one task per (CommCare project, stream), a pool per project.

`apps` runs first in each project (form tables take names, labels and repeats from it), then
`cases` and `forms`. Each project's tasks share a pool of one slot, since HQ rate-limits per
project: create the pools once, e.g. `airflow pools set commcare_my-project 1 "commcare-etl"`.
Overlapping runs are harmless: commcare-etl's advisory locks make the second exit 4, which
this DAG treats as "skipped" (another run had the work).

Settings come from the environment of the worker (DATABASE_URL, and per project the API key
in an environment variable named in PROJECTS below, e.g. from an Airflow connection or a
secrets backend): never from this file.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

# domain -> (web user, name of the environment variable holding that user's API key)
PROJECTS = {
    "my-project": ("me@example.org", "MY_PROJECT_API_KEY"),
}
STREAMS = ("apps", "cases", "forms")

with DAG(
    dag_id="commcare_etl",
    schedule=timedelta(minutes=15),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0, "execution_timeout": timedelta(hours=3)},
    tags=["commcare"],
) as dag:
    for domain, (username, key_variable) in PROJECTS.items():
        tasks = {}
        for stream in STREAMS:
            tasks[stream] = BashOperator(
                task_id=f"{domain}.{stream}",
                pool=f"commcare_{domain}",
                bash_command=(
                    f'COMMCARE_API_KEY="${{{key_variable}}}" '
                    f"commcare-etl sync --domain {domain} --stream {stream}; "
                    f'code=$?; [ "$code" -eq 4 ] && exit 99; exit $code'
                ),
                env={"COMMCARE_DOMAIN": domain, "COMMCARE_USERNAME": username,
                     "LOG_FORMAT": "json"},
                append_env=True,
                skip_on_exit_code=99,  # 4 = another run held the lock: skipped, not failed
            )
        tasks["apps"] >> [tasks["cases"], tasks["forms"]]
