"""Verify, as the plain runner runs it: the ledger and the target opened, tasks/verify.py's
checks made, the connections closed."""

from __future__ import annotations

from core.client import make_target
from core.config import Mapping, RunConfig
from core.ledger import Ledger
from tasks.verify import SAMPLE, VerifyResult, delivered_requests, estimate, pick, verify


def run_verify(
    mapping: Mapping, cfg: RunConfig, sample: int | None = SAMPLE, seed: int = 0, run_id: str | None = None
) -> VerifyResult:
    ledger = Ledger(cfg.state.ledger())
    target = make_target(cfg.target)
    try:
        return verify(
            ledger, target, cfg.target.ledger_name, mapping.source.name, sample=sample, seed=seed, run_id=run_id
        )
    finally:
        target.close()
        ledger.close()


def verify_cost(mapping: Mapping, cfg: RunConfig, sample: int | None, run_id: str | None = None) -> tuple[int, int]:
    """(requests that would be checked, listing calls they cost), before a run."""
    ledger = Ledger(cfg.state.ledger())
    target = make_target(cfg.target)
    try:
        requests = pick(delivered_requests(ledger, cfg.target.ledger_name, mapping.source.name, run_id), sample, 0)
        return len(requests), estimate(target, requests)
    finally:
        target.close()
        ledger.close()
