"""Serve the deployments of deployments/prefect.yaml from this one machine, no work pool.

    uv run python -m flows.serve            # all deployments, their schedules active
    uv run python -m flows.serve --list     # what would be served

The deployment definitions (names, entrypoints, parameters, schedules, triggers) are read from
deployments/prefect.yaml, the same file `prefect deploy` uses, so the two never drift.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import Any, cast

import yaml

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"


def definitions(path: Path = PREFECT_YAML) -> list[dict]:
    return list(yaml.safe_load(path.read_text()).get("deployments") or [])


def load_entrypoint(entrypoint: str):
    """`flows/sync.py:sync_flow` -> the flow object."""
    file, _, name = entrypoint.partition(":")
    module = file.removesuffix(".py").replace("/", ".")
    return getattr(importlib.import_module(module), name)


def to_deployments(defs: list[dict]):
    from prefect.events import DeploymentTriggerTypes
    from prefect.schedules import Cron
    from pydantic import TypeAdapter

    trigger: TypeAdapter[Any] = TypeAdapter(cast(Any, DeploymentTriggerTypes))  # an Annotated union

    out = []
    for d in defs:
        fl = load_entrypoint(d["entrypoint"])
        schedules = [
            Cron(s["cron"], timezone=s.get("timezone", "UTC"))
            for s in d.get("schedules") or []
            if s.get("active", True)
        ]
        out.append(
            fl.to_deployment(
                name=d["name"],
                parameters=d.get("parameters") or {},
                schedules=schedules or None,
                description=d.get("description"),
                tags=d.get("tags") or None,
                triggers=[trigger.validate_python(t) for t in d.get("triggers") or []] or None,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print the deployments and exit")
    ap.add_argument("--file", type=Path, default=PREFECT_YAML)
    args = ap.parse_args()
    defs = definitions(args.file)
    if args.list:
        for d in defs:
            crons = ", ".join(
                f"{s['cron']} {s.get('timezone', 'UTC')}{'' if s.get('active', True) else ' (off)'}"
                for s in d.get("schedules") or []
            )
            print(f"{d['name']:<24} {d['entrypoint']:<40} {crons or 'no schedule'}")
        return
    os.chdir(ROOT)  # mapping and config paths in the parameters are relative to the repo
    from prefect import serve

    serve(*to_deployments(defs))


if __name__ == "__main__":
    main()
