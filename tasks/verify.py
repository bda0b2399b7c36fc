"""Verify: what the target made of the requests it accepted, and that erasures left nothing.

Exactly-once ends at MemOS's answer; what MemOS then stores is its own work (background
extraction). For a source's delivered requests (a seeded sample, or all) this lists what the
target holds under each request's batch key and says, per request:

* `ok`: memories found, none repeated;
* `stored nothing`: extraction finished (or there is none to wait for) and no memory names
  the request;
* `still extracting`: no memory yet, and the request's task (cloud) or the user's memories
  (self-hosted) are still being worked on: verify again later;
* `extraction failed`: the target's task status says so;
* `repeated`: the same memory text more than once under one batch key (MemOS's own
  duplicates: reported, never "fixed" here);
* `cannot tell`: the target cannot list them all.

For erasures of this target it checks that no memory, and no search hit, of the erased user
(or conversation) remains. Cost: one listing per request on the cloud (/get/memory filtered on
info.batch_key, /get/status only for requests with none), one listing per user self-hosted;
`estimate` says how many before a run. Plain functions over a Ledger and a Target."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from core.client import Target
from core.errors import CannotTell, TargetError, first_line
from core.ledger import Ledger

#: the default sample of requests
SAMPLE = 50
#: task statuses that mean extraction is still running (cloud /get/status)
RUNNING = frozenset({"pending", "queued", "running", "processing", "in_progress", "started"})
#: words an erased user's leftovers would be found by (the dev-server's search needs 3+ letters)
PROBE = "the and you that what with this have"

OK, NOTHING, EXTRACTING, FAILED, REPEATED, CANNOT = (
    "ok",
    "stored nothing",
    "still extracting",
    "extraction failed",
    "repeated",
    "cannot tell",
)
#: outcomes that are findings (exit code 2), in the order the report lists them
FINDINGS = (NOTHING, REPEATED, FAILED, EXTRACTING, CANNOT)


@dataclass
class RequestCheck:
    batch_key: str
    user_id: str
    conversation_id: str
    run_id: str
    n_messages: int
    outcome: str
    memories: int = 0
    repeated_texts: int = 0  # distinct texts found more than once
    extra_copies: int = 0  # memories beyond the first copy of each text
    memory_ids: list[str] = field(default_factory=list)  # the repeated ones (ids, never text)
    detail: str = ""


@dataclass
class ErasureCheck:
    erasure_id: str
    user_id: str
    conversation_id: str | None
    memories_left: int
    search_hits: int
    detail: str = ""

    @property
    def clean(self) -> bool:
        return not self.memories_left and not self.search_hits and not self.detail


@dataclass
class VerifyResult:
    source: str
    target: str
    delivered: int  # delivered requests of the source (or of the run)
    checked: int
    seed: int | None
    outcomes: Counter = field(default_factory=Counter)
    findings: list[RequestCheck] = field(default_factory=list)
    erasures: list[ErasureCheck] = field(default_factory=list)
    listings: int = 0  # calls made to list memories (the cost)
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        bad = any(self.outcomes[k] for k in FINDINGS) or any(not e.clean for e in self.erasures)
        return "findings" if bad else "clean"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["outcomes"] = dict(self.outcomes)
        d["status"] = self.status
        d["erasures"] = [{**asdict(e), "clean": e.clean} for e in self.erasures]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VerifyResult:
        out = cls(d["source"], d["target"], d["delivered"], d["checked"], d["seed"], Counter(d["outcomes"]))
        out.findings = [RequestCheck(**f) for f in d["findings"]]
        out.erasures = [ErasureCheck(**{k: v for k, v in e.items() if k != "clean"}) for e in d["erasures"]]
        out.listings = d["listings"]
        out.notes = list(d.get("notes") or [])
        return out

    def lines(self) -> list[str]:
        out = [
            f"verify {self.source} on {self.target}: {self.checked} of {self.delivered} delivered requests checked"
            + (f" (sample, seed {self.seed})" if self.seed is not None else ""),
            *(f"  {k:<18} {self.outcomes.get(k, 0)}" for k in (OK, *FINDINGS)),
        ]
        for f in self.findings[:20]:
            extra = f", {f.extra_copies} extra copies of {f.repeated_texts} texts" if f.outcome == REPEATED else ""
            out.append(
                f"  - {f.outcome}: request {f.batch_key} ({f.user_id}/{f.conversation_id}, {f.n_messages} "
                f"messages, run {f.run_id}): {f.memories} memories{extra}{'; ' + f.detail if f.detail else ''}"
            )
        if len(self.findings) > 20:
            out.append(f"  ... and {len(self.findings) - 20} more (--json lists them all)")
        for e in self.erasures:
            scope = f"{e.user_id}/{e.conversation_id}" if e.conversation_id else e.user_id
            state = "nothing left" if e.clean else f"{e.memories_left} memories and {e.search_hits} search hits left"
            out.append(f"  erasure {e.erasure_id} of {scope}: {state}{'; ' + e.detail if e.detail else ''}")
        out += [f"  note: {n}" for n in self.notes]
        out.append(f"  listings           {self.listings}")
        out.append(f"status {self.status}")
        return out


def delivered_requests(ledger: Ledger, target: str, source: str, run_id: str | None = None) -> list[dict]:
    """The source's delivered requests, those of erased users and conversations aside (the
    erasure check looks at those)."""
    users, convs = ledger.erased()
    return [
        b
        for b in ledger.delivered_batches(target, source=source, run_id=run_id)
        if b["status"] == "delivered"
        and b["n_messages"]
        and b["user_id"] not in users
        and (b["user_id"], b["conversation_id"]) not in convs
    ]


def pick(requests: list[dict], sample: int | None, seed: int) -> list[dict]:
    """A seeded sample (the same requests for the same seed and ledger), or all (`sample` None)."""
    if sample is None or sample >= len(requests):
        return list(requests)
    return random.Random(seed).sample(requests, sample)


def estimate(target: Target, requests: list[dict]) -> int:
    """Listing calls verify makes for these requests (task status calls aside)."""
    return len(requests) if target.kind == "cloud" else len({r["user_id"] for r in requests})


def verify(
    ledger: Ledger,
    target: Target,
    target_name: str,
    source: str,
    *,
    sample: int | None = SAMPLE,
    seed: int = 0,
    run_id: str | None = None,
    erasures: bool = True,
) -> VerifyResult:
    requests = delivered_requests(ledger, target_name, source, run_id)
    chosen = pick(requests, sample, seed)
    result = VerifyResult(
        source, target_name, len(requests), len(chosen), seed if sample is not None and sample < len(requests) else None
    )
    if not requests:
        result.notes.append(
            f"no delivered requests of {source} on {target_name}: nothing to check (delivered under another "
            "target name? `memos-etl status` lists them)"
        )
    by_user: dict[str, list[dict]] = defaultdict(list)
    for r in chosen:
        by_user[r["user_id"]].append(r)
    for user, reqs in sorted(by_user.items()):
        keys = [r["batch_key"] for r in reqs]
        try:
            found = target.request_memories(user, keys)
            result.listings += estimate(target, reqs)
        except CannotTell as exc:  # the target's own limits; unreachable or refusing is an error
            for r in reqs:
                _add(result, _check(r, CANNOT, detail=first_line(exc, 300)))
            continue
        for r in reqs:
            _add(result, classify(target, r, found.get(r["batch_key"], [])))
    if erasures:
        result.erasures = check_erasures(ledger, target, target_name, result)
    return result


def classify(target: Target, request: dict, memories: list[dict]) -> RequestCheck:
    """One request's outcome from the memories listed under its batch key."""
    if not memories:
        status = "unknown"
        if request.get("task_id") and target.kind == "cloud":
            try:
                status = target.task_status(str(request["task_id"])).lower()
            except TargetError:
                status = "unknown"
        if status in RUNNING:
            return _check(request, EXTRACTING, detail=f"task {request['task_id']} {status}")
        if status == "failed":
            return _check(request, FAILED, detail=f"task {request['task_id']} failed")
        return _check(request, NOTHING)
    texts = Counter(m["text"].strip() for m in memories)
    repeated = {t: n for t, n in texts.items() if n > 1}
    if repeated:
        ids = [m["id"] for m in memories if m["text"].strip() in repeated]
        return _check(
            request,
            REPEATED,
            memories=len(memories),
            repeated_texts=len(repeated),
            extra_copies=sum(n - 1 for n in repeated.values()),
            memory_ids=ids[:50],
        )
    if any(m["in_flight"] for m in memories):  # fast memories, extraction will replace them
        return _check(request, EXTRACTING, memories=len(memories), detail="memories still at the fast stage")
    return _check(request, OK, memories=len(memories))


def check_erasures(ledger: Ledger, target: Target, target_name: str, result: VerifyResult) -> list[ErasureCheck]:
    """Every erasure on this target: no memory and no search hit of it remains."""
    out = []
    for e in ledger.erasure_log():
        if e["target"] != target_name:
            continue
        user, conv = e["user_id"], e.get("conversation_id")
        try:
            left = [m for m in target.user_memories(user) if conv is None or m["conversation_id"] == conv]
            hits = [h for h in target.search(user, PROBE, 10) if conv is None or h.get("conversation_id") == conv]
            result.listings += 2
            out.append(ErasureCheck(e["erasure_id"], user, conv, len(left), len(hits)))
        except CannotTell as exc:
            out.append(ErasureCheck(e["erasure_id"], user, conv, 0, 0, detail=f"cannot tell: {first_line(exc, 300)}"))
    return out


def _check(r: dict, outcome: str, **kw: Any) -> RequestCheck:
    return RequestCheck(
        batch_key=r["batch_key"],
        user_id=r["user_id"],
        conversation_id=r["conversation_id"],
        run_id=r["run_id"],
        n_messages=int(r["n_messages"]),
        outcome=outcome,
        **kw,
    )


def _add(result: VerifyResult, check: RequestCheck) -> None:
    result.outcomes[check.outcome] += 1
    if check.outcome != OK:
        result.findings.append(check)
