"""deployments/prefect.yaml against the flows it names: every entrypoint imports, every
parameter is one the flow takes and validates, required ones are given (or passed by the
flow that starts the deployment), sources and schedules resolve."""

from __future__ import annotations

import inspect

import pytest
from prefect.schedules import Cron

from core.config import load_run_config
from flows.serve import PREFECT_YAML, definitions, load_entrypoint, to_deployments
from tests.conftest import ROOT

DEFS = definitions()
# parameters a parent flow passes at run time (run_deployment), not the deployment
PASSED_AT_RUN_TIME = {"backfill-part": {"source", "backfill_id", "part_key", "spec"}}


@pytest.mark.parametrize("d", DEFS, ids=[d["name"] for d in DEFS])
def test_deployment_matches_its_flow(d):
    fl = load_entrypoint(d["entrypoint"])
    sig = inspect.signature(fl.fn)
    params = d.get("parameters") or {}
    unknown = set(params) - set(sig.parameters)
    assert not unknown, f"{d['name']}: {unknown} are not parameters of {d['entrypoint']}"
    required = {n for n, p in sig.parameters.items() if p.default is inspect.Parameter.empty}
    missing = required - set(params) - PASSED_AT_RUN_TIME.get(d["name"], set())
    assert not missing, f"{d['name']}: required parameters {missing} not given"
    fl.validate_parameters(
        {
            **{n: "x" for n in PASSED_AT_RUN_TIME.get(d["name"], ()) if n != "spec"},
            **({"spec": {}} if "spec" in sig.parameters and d["name"] == "backfill-part" else {}),
            **params,
        }
    )
    if "source" in params:  # the source is one the config file names, and its mapping loads
        cfg = load_run_config(ROOT / params.get("config_path", "deployments/memos-etl.yaml"), environ={})
        assert cfg.mapping(params["source"]).source.name
    for s in d.get("schedules") or []:
        Cron(s["cron"], timezone=s.get("timezone", "UTC"))
    assert d["work_pool"]["name"] == "memos-etl"


def test_every_flow_is_deployed_and_serve_builds_them():
    deployed = {d["entrypoint"] for d in DEFS}
    for entry in (
        "flows/sync.py:sync_flow",
        "flows/backfill.py:backfill_flow",
        "flows/backfill.py:backfill_part_flow",
        "flows/replay.py:replay_flow",
    ):
        assert entry in deployed
    nightly = [d for d in DEFS if d["name"].endswith("-nightly")]
    cfg = load_run_config(ROOT / "deployments/memos-etl.yaml", environ={})
    assert {d["parameters"]["source"] for d in nightly} == set(cfg.sources)  # one nightly per source
    assert PREFECT_YAML.exists()
    built = to_deployments(DEFS)
    assert [b.name for b in built] == [d["name"] for d in DEFS]
    # the backfill flow starts parts through the deployment name the yaml defines
    from flows.backfill import PART_DEPLOYMENT

    assert PART_DEPLOYMENT == "memos-etl-backfill-part/backfill-part"
    assert any(
        d["name"] == "backfill-part" and load_entrypoint(d["entrypoint"]).name == "memos-etl-backfill-part"
        for d in DEFS
    )
