#!/usr/bin/env bash
# One DAG run of a source with real Airflow 3, and its run report:
#   deployments/airflow/dag-test.sh MAPPING --target-url URL [--work-dir DIR] [--config FILE]
# MAPPING is a mapping file (or, with --config, a source name of that run config). The Airflow
# environment (.venv-airflow, the uv group `airflow`, no Prefect) is set up first, in seconds
# once uv's cache holds it; the run is `airflow dags test` of the DAG that flows.airflow.dags()
# makes for the source, with a SQLite metadata database in a throwaway AIRFLOW_HOME. The state
# (ledger, quarantine) is where `memos-etl sync MAPPING` keeps it: --work-dir, else the config's
# state.work_dir, else .memos-etl/ here. So a second run sends nothing. The API key, if the
# target needs one, is read from $MEMOS_API_KEY (the connection's password). docs/airflow.md.
set -euo pipefail
here=$PWD
root="$(cd "$(dirname "$0")/../.." && pwd)"
usage="usage: $0 MAPPING --target-url URL [--work-dir DIR] [--config FILE]"
source_arg="" target_url="" work_dir="" config=""
while (($#)); do
  case "$1" in
    --target-url) target_url="$2"; shift 2 ;;
    --work-dir) work_dir="$2"; shift 2 ;;
    --config|-c) config="$2"; shift 2 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) echo "$usage" >&2; exit 64 ;;
    *) [[ -z "$source_arg" ]] || { echo "$usage" >&2; exit 64; }; source_arg="$1"; shift ;;
  esac
done
[[ -n "$source_arg" && -n "$target_url" ]] || { echo "$usage" >&2; exit 64; }
abs() { [[ "$1" = /* ]] && echo "$1" || echo "$here/$1"; }
[[ -z "$config" ]] || config="$(abs "$config")"
if [[ -z "$config" || -e "$source_arg" ]]; then source_arg="$(abs "$source_arg")"; fi
[[ -z "$work_dir" ]] || work_dir="$(abs "$work_dir")"

venv="${MEMOS_ETL_AIRFLOW_VENV:-$root/.venv-airflow}"
start=$(date +%s.%N)
(cd "$root" && UV_PROJECT_ENVIRONMENT="$venv" uv sync --frozen --no-default-groups --group airflow --quiet)
echo "Airflow environment $venv ready in $(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)") s" >&2

home="$(mktemp -d "${TMPDIR:-/tmp}/memos-etl-airflow-XXXXXX")"
trap 'rm -rf "$home"' EXIT
mkdir -p "$home/dags"
export AIRFLOW_HOME="$home" AIRFLOW__CORE__DAGS_FOLDER="$home/dags" AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$home/airflow.db" AIRFLOW__LOGGING__LOGGING_LEVEL=INFO
export MEMOS_ETL_DAG_SOURCE="$source_arg" MEMOS_ETL_DAG_CONFIG="$config" MEMOS_ETL_DAG_WORK_DIR="$work_dir"
# the target: host is the base URL, the password the API key (none: the config's own variable)
AIRFLOW_CONN_MEMOS_DEFAULT="$("$venv/bin/python" -c '
import json, os, sys
conn = {"conn_type": "http", "host": sys.argv[1]}
if os.environ.get("MEMOS_API_KEY"):
    conn["password"] = os.environ["MEMOS_API_KEY"]
print(json.dumps(conn))' "$target_url")"
export AIRFLOW_CONN_MEMOS_DEFAULT
cp "$root/deployments/airflow/dag_test_dag.py" "$home/dags/memos_etl_dag_test.py"
dag_id="$(cd "$here" && PYTHONPATH="$root" "$venv/bin/python" "$home/dags/memos_etl_dag_test.py")"
cd "$here"  # relative paths of the config and a relative state.work_dir: as for `memos-etl sync` here
"$venv/bin/airflow" db migrate >"$home/migrate.log" 2>&1 || { cat "$home/migrate.log" >&2; exit 1; }
# Airflow's own log of the run goes to a file (kept when the run fails); the report is printed
set +e
"$venv/bin/airflow" dags test "$dag_id" >"$home/dags-test.log" 2>&1
rc=$?
set -e
awk '/memos-etl run report:/ {on=1; next} on && /^[0-9]{4}-[0-9]{2}-[0-9]{2}T/ {on=0} on' "$home/dags-test.log" |
  sed -E 's/ \[airflow\.task\.operators\..*$//'
if ((rc)) || ! grep -q "new_state=success" "$home/dags-test.log"; then
  keep="$(mktemp "${TMPDIR:-/tmp}/memos-etl-dag-test-XXXXXX.log")"
  cp "$home/dags-test.log" "$keep"
  grep -E "AirflowFailException|RunNotComplete|Error:|error" "$home/dags-test.log" | tail -5 >&2 || true
  echo "the DAG run failed; Airflow's log: $keep" >&2
  exit 1
fi
