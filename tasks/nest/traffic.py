"""Messages that are not the conversation's text, by a level's `traffic` tests (core/config/
nest.py): ChatGPT's calls to a tool (`recipient` not all), tools' results (`author.role`
tool) and the context the app does not show. The walk marks their rows (column `traffic`)
for the mapping's skip rules to count by kind, or, with nest.tools keep, loads calls and
results as role tool."""

from __future__ import annotations

from core.config.nest import Traffic


def traffic_kind(elem, traffic: Traffic) -> str | None:
    """What an element is besides conversation text: context (hidden), result, call; or None."""
    if not isinstance(elem, dict):
        return None
    for kind, tests in _compiled(traffic):
        for parts, values, other_than in tests:
            v: object = elem
            for k in parts:
                v = v.get(k) if isinstance(v, dict) else None
            if v is None:
                continue
            v = ("true" if v else "false") if isinstance(v, bool) else str(v)
            if v in values or (other_than and v not in other_than):
                return kind
    return None


_COMPILED: dict[int, tuple[Traffic, list]] = {}


def _compiled(traffic: Traffic) -> list:
    """A level's traffic tests as (kind, [(key parts, values, other_than)]), made once."""
    hit = _COMPILED.get(id(traffic))
    if hit is None or hit[0] is not traffic:
        tests = [
            (kind, [(t.key.split("."), frozenset(t.values), frozenset(t.other_than)) for t in group])
            for kind, group in (("context", traffic.hidden), ("result", traffic.result), ("call", traffic.call))
        ]
        hit = _COMPILED[id(traffic)] = (traffic, tests)
    return hit[1]
