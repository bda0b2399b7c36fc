"""The `redact:` section of a mapping: the personal data tasks/redact/ removes before
anything leaves, and how."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from core.config.files import Strict
from core.secrets import secret_block


class RedactPattern(Strict):
    """A custom entity found by a regular expression (a Presidio PatternRecognizer)."""

    entity: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")
    regex: str
    score: float = Field(default=0.9, ge=0, le=1)
    context: list[str] = []  # words near a match that raise its score (with a spaCy model only)


RedactOperator = Literal["replace", "mask", "hash", "drop_message"]


class RedactConfig(Strict):
    """Personal data found by Microsoft Presidio and removed before anything leaves (tasks/redact/)."""

    entities: list[str] | None = None  # Presidio entity names; None: tasks.redact.DEFAULT_ENTITIES
    operator: RedactOperator = "replace"  # for every entity ...
    operators: dict[str, RedactOperator] = {}  # ... unless named here
    mask_char: str = Field(default="*", min_length=1, max_length=1)
    score_threshold: float = Field(default=0.3, ge=0, le=1)
    allow: list[str] = []  # values never redacted (exact match), e.g. the support address
    patterns: list[RedactPattern] = []
    deny: dict[str, list[str]] = {}  # entity -> exact words always redacted (a Presidio deny list)
    language: str = "en"
    # PHONE_NUMBER: the regions whose numbers count (ISO codes); default Presidio's US, GB, DE, FR,
    # IL, IN, CA, BR. Fewer regions with longer numbers also pass fewer messages to Presidio.
    phone_regions: list[str] | None = None
    # NER entities (PERSON, LOCATION, ...) need a spaCy pipeline: an installed package name or a folder
    spacy_model: str | None = None
    hash_secret_env: str = "MEMOS_ETL_REDACT_SECRET"  # the key of the `hash` operator ...
    hash_secret_block: str | None = None  # ... or a Prefect Secret block holding it

    def entity_list(self, defaults: list[str]) -> list[str]:
        names = list(self.entities) if self.entities is not None else list(defaults)
        for extra in [p.entity for p in self.patterns] + list(self.deny):
            if extra not in names:
                names.append(extra)
        return names

    def operator_of(self, entity: str) -> str:
        return self.operators.get(entity, self.operator)

    def secret(self) -> bytes | None:
        """The hash key, when some entity is hashed: from the Prefect Secret block if one is
        named, else from the environment. Raises ValueError naming what is missing."""
        if "hash" not in {self.operator, *self.operators.values()}:
            return None
        if self.hash_secret_block:
            value = secret_block(self.hash_secret_block)
        else:
            value = os.environ.get(self.hash_secret_env, "")
        key = str(value).encode()
        if len(key) < 16:
            where = (
                f"Prefect Secret block {self.hash_secret_block!r}"
                if self.hash_secret_block
                else f"${self.hash_secret_env}"
            )
            raise ValueError(
                f"the hash operator needs a secret of at least 16 bytes in {where} "
                f"({'got ' + str(len(key)) + ' bytes' if key else 'not set'}); the same secret "
                "gives the same tokens across runs and sources"
            )
        return key
