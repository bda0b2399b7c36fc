"""The pre-filter: per entity, one RE2 expression that matches every text Presidio could find
that entity in (recognizers' own patterns loosened into a superset, phone numbers as a run of
digits), run over a whole batch with Arrow's regex kernels; only the messages it passes reach
Presidio."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.redact.re2 import loosen, phone_prefilter, re2_ok


def prefilters(recognizers, entities) -> dict[str, str | None]:
    """entity -> RE2 expression a message must match to be read by Presidio (None: all)."""
    from presidio_analyzer import PatternRecognizer

    per: dict[str, list[str] | None] = {e: [] for e in entities}
    for r in recognizers:
        if type(r).__name__ == "PhoneRecognizer":
            exprs = [phone_prefilter(r.supported_regions, r.leniency or 0)]
        elif isinstance(r, PatternRecognizer) and (
            type(r).analyze is PatternRecognizer.analyze or type(r).__name__ == "IbanRecognizer"
        ):
            loose = [loosen(p.regex) for p in cast(Any, r).patterns]
            exprs = [x for x in loose if x is not None and re2_ok(x)]
            if not loose or len(exprs) != len(loose):
                exprs = None
        else:
            exprs = None
        for e in r.supported_entities:
            if e not in per:
                continue
            have = per[e]
            per[e] = None if exprs is None or have is None else have + exprs
    out: dict[str, str | None] = {}
    for e, exprs in per.items():
        if exprs is None or not exprs:
            out[e] = None
            continue
        union = "|".join(f"(?:{x})" for x in exprs)
        out[e] = union if re2_ok(union) else None
    return out


def candidates(prefilter: dict[str, str | None], content: pa.Array) -> dict[str, np.ndarray]:
    """entity -> which messages its pre-filter passes (vectorised, one RE2 pass each)."""
    n = len(content)
    out = {}
    for e, expr in prefilter.items():
        if expr is None:
            out[e] = pc.is_valid(content).to_numpy(zero_copy_only=False)
        else:
            hit = pc.match_substring_regex(content, expr)
            out[e] = pc.fill_null(hit, False).to_numpy(zero_copy_only=False) if n else np.zeros(0, bool)
    return out
