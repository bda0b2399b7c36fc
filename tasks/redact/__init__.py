"""Redact: personal data found by Microsoft Presidio and removed from message text.

Runs on a whole mapped batch, before validation, fingerprints, staging, the outbox, the
ledger and MemOS see the content (tasks/stage.py); the quarantine keeps the raw source row.

Presidio is thorough and slow (milliseconds a message, most of it python-phonenumbers), so a
batch goes through a vectorised pre-filter first: for each entity, an RE2 expression (Arrow's
regex kernels) that matches every text Presidio could find that entity in. Pattern
recognizers' own expressions are loosened into such a superset (`loosen`: lookarounds and
word boundaries dropped, back-references widened, Python's Unicode classes spelt out);
phone numbers need a run of digits as long as the shortest valid number of the recognizer's
regions. Only candidate messages reach Presidio, each asked for the entities its pre-filter
matched, so the result is the one Presidio gives on every message, at a fraction of the cost.
NER entities (spaCy) have no pre-filter: every message goes through the model.

Everything is deterministic: the same text, config and secret give the same output, so a
re-run sends nothing and batch keys do not move. `hash` is HMAC-SHA256 with the secret (not
Presidio's salted hash, whose salt is random per call unless given, and which is not keyed).

* engine.py     the Redactor: Presidio analyzer and anonymizer behind the pre-filter
* prefilter.py  the vectorised pre-filter: an RE2 expression per entity, over a whole batch
* re2.py        Presidio's expressions translated into RE2 supersets (the pre-filter's patterns)
"""

from __future__ import annotations

from core.errors import ConfigError
from tasks.redact.engine import DEFAULT_ENTITIES, NER_ENTITIES, Redacted, Redactor, preload
from tasks.redact.re2 import loosen, phone_prefilter, re2_ok

__all__ = [
    "DEFAULT_ENTITIES",
    "NER_ENTITIES",
    "Redacted",
    "Redactor",
    "loosen",
    "phone_prefilter",
    "preload",
    "re2_ok",
    "redaction_secret",
    "redactor_for",
]


def redaction_secret(mapping) -> bytes | None:
    """The hash operator's key (None when nothing is hashed); a missing or short one is a
    ConfigError naming the variable or block. Cheap: no Presidio import."""
    cfg = mapping.redact
    try:
        return cfg.secret()
    except ValueError as exc:
        raise ConfigError(
            str(mapping.path_ or "mapping"),
            "redact.hash_secret_env" if not cfg.hash_secret_block else "redact.hash_secret_block",
            str(exc),
        ) from None


def redactor_for(mapping, secret: bytes | None = None) -> Redactor | None:
    """The mapping's Redactor, or None when it redacts nothing. Config problems (unknown
    entity, missing model or secret) are ConfigErrors raised here, before anything is read.
    `secret`: one redaction_secret already gave (else it is resolved here)."""
    cfg = mapping.redact
    if cfg is None:
        return None
    return Redactor(cfg, str(mapping.path_ or "mapping"), secret if secret is not None else redaction_secret(mapping))
