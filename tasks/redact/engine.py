"""The Redactor: Presidio's analyzer and anonymizer behind the vectorised pre-filter
(prefilter.py), with the operators of RedactConfig; deterministic (see the package's docstring)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import RedactConfig
from core.errors import ConfigError
from core.imports import import_in_background
from tasks.redact.prefilter import candidates, prefilters

#: Found by patterns and checksums alone: no model, no download.
DEFAULT_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN"]
#: Found only by a spaCy model's named-entity recognizer.
NER_ENTITIES = {"PERSON", "LOCATION", "NRP", "ORGANIZATION"}
HASH_CHARS = 16  # hex digits of the HMAC kept in a token: 64 bits

_init_lock = threading.Lock()
_offline = False


def preload() -> threading.Thread:
    """Import Presidio (and spaCy under it: ~3 s here) on a background thread while the caller
    starts Prefect and lists the source; the Redactor then finds it imported."""
    return import_in_background("presidio-import", "presidio_analyzer", "presidio_anonymizer")


def offline_suffix_list() -> None:
    """Presidio's e-mail and URL checks use tldextract, whose default extractor downloads the
    public suffix list on first use. Point it at the snapshot the package ships, no cache."""
    global _offline
    if _offline:
        return
    import tldextract
    import tldextract.tldextract as tx

    tx.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    _offline = True


@dataclass
class Redacted:
    """A batch's content after redaction, and what was found in it."""

    content: pa.Array
    drop: np.ndarray  # messages dropped whole (an entity with operator drop_message)
    changed: np.ndarray  # messages whose text changed (or were dropped)
    found: Counter = field(default_factory=Counter)  # entity -> occurrences removed
    messages: Counter = field(default_factory=Counter)  # entity -> messages holding it
    candidates: int = 0  # messages the pre-filter sent to Presidio


class Redactor:
    """Presidio analyzer + anonymizer for one mapping's `redact:` section. Built once per run
    (seconds of imports, no model download: a missing model is a ConfigError naming it), then
    shared by the stage threads."""

    def __init__(self, cfg: RedactConfig, where: str = "mapping", secret: bytes | None = None):
        self.cfg = cfg
        self.where = where
        self.secret = secret
        with _init_lock:
            self._build()

    # construction ----------------------------------------------------------------------

    def _error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.where, f"redact.{key}", problem)

    def _build(self) -> None:
        import regex

        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        logging.getLogger("presidio-anonymizer").setLevel(logging.ERROR)
        offline_suffix_list()
        from presidio_analyzer import (
            AnalyzerEngine,
            BatchAnalyzerEngine,
            Pattern,
            PatternRecognizer,
            RecognizerRegistry,
        )
        from presidio_analyzer.nlp_engine import NoOpNlpEngine, SpacyNlpEngine
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import OperatorConfig

        cfg, lang = self.cfg, self.cfg.language
        self.entities = cfg.entity_list(DEFAULT_ENTITIES)
        ner = [e for e in self.entities if e in NER_ENTITIES]
        if cfg.spacy_model:
            model = cfg.spacy_model
            import spacy.util

            if not (spacy.util.is_package(model) or Path(model).is_dir()):
                raise self._error(
                    "spacy_model",
                    f"spaCy model {model!r} is not installed (no package of that "
                    "name, no pipeline folder there); install the package (e.g. `uv pip install "
                    f"{model}` from spaCy's model releases) or point to a folder. Nothing is "
                    "downloaded on the fly.",
                )
            nlp: Any = SpacyNlpEngine(models=[{"lang_code": lang, "model_name": model}])
        elif ner:
            raise self._error(
                "entities",
                f"{', '.join(ner)} {'is' if len(ner) == 1 else 'are'} found by a spaCy "
                "named-entity model, and none is set: install one (e.g. the package "
                "`en_core_web_lg` from spaCy's model releases) and name it in redact.spacy_model, "
                "or leave these entities out (pattern entities need no model)",
            )
        else:
            nlp = NoOpNlpEngine(models=[{"lang_code": lang, "model_name": "none"}])
        nlp.load()
        registry = RecognizerRegistry(supported_languages=[lang])
        registry.load_predefined_recognizers(languages=[lang], nlp_engine=nlp)
        custom = []
        for i, p in enumerate(cfg.patterns):
            try:
                regex.compile(p.regex)
            except regex.error as exc:
                raise self._error(f"patterns[{i}].regex", f"not a regular expression: {exc}") from None
            custom.append(
                PatternRecognizer(
                    supported_entity=p.entity,
                    supported_language=lang,
                    patterns=[Pattern(name=p.entity.lower(), regex=p.regex, score=p.score)],
                    context=p.context or None,  # type: ignore[arg-type]  # Presidio takes None: no context words
                    name=f"mapping pattern {p.entity}",
                )
            )
        for entity, words in cfg.deny.items():
            custom.append(
                PatternRecognizer(
                    supported_entity=entity,
                    supported_language=lang,
                    deny_list=words,
                    name=f"mapping deny list {entity}",
                )
            )
        if cfg.phone_regions is not None:
            import phonenumbers

            regions = [r.upper() for r in cfg.phone_regions]
            bad = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
            if bad or not regions:
                raise self._error(
                    "phone_regions",
                    f"not a region python-phonenumbers knows: {', '.join(bad) or '(none)'}"
                    " (ISO 3166 codes such as US, GB, DE)",
                )
            from presidio_analyzer.predefined_recognizers import PhoneRecognizer

            registry.recognizers = [r for r in registry.recognizers if type(r).__name__ != "PhoneRecognizer"]
            registry.add_recognizer(PhoneRecognizer(supported_language=lang, supported_regions=tuple(regions)))
        wanted = set(self.entities)
        keep = []
        for r in [*registry.recognizers, *custom]:
            if not wanted & set(r.supported_entities):
                continue
            if not cfg.spacy_model and not isinstance(r, PatternRecognizer) and type(r).__name__ != "PhoneRecognizer":
                continue  # an NLP recognizer with nothing to read
            keep.append(r)
        registry.recognizers = keep
        known = {e for r in keep for e in r.supported_entities}
        unknown = [e for e in self.entities if e not in known]
        if unknown:
            everything = RecognizerRegistry(supported_languages=[lang])
            everything.load_predefined_recognizers(languages=[lang])
            names = sorted({e for r in everything.recognizers for e in r.supported_entities})
            raise self._error(
                "entities",
                f"unknown entity {', '.join(unknown)} for language {lang!r}; Presidio "
                f"knows {', '.join(names)}; add your own under redact.patterns or redact.deny",
            )
        for e in list(cfg.operators):
            if e not in wanted:
                raise self._error(
                    f"operators.{e}", f"{e} is not among the entities redacted ({', '.join(self.entities)})"
                )
        self.analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=[lang])
        self.batch = BatchAnalyzerEngine(analyzer_engine=self.analyzer)
        self.anonymizer = AnonymizerEngine()
        self.operators = {}
        for e in self.entities:
            op = cfg.operator_of(e)
            if op == "replace":
                self.operators[e] = OperatorConfig("replace", {"new_value": f"<{e}>"})
            elif op == "mask":
                self.operators[e] = OperatorConfig(
                    "mask", {"masking_char": cfg.mask_char, "chars_to_mask": 1 << 30, "from_end": False}
                )
            elif op == "hash":
                if self.secret is None:
                    raise self._error("operators", "the hash operator needs a secret: see redact.hash_secret_env")
                self.operators[e] = OperatorConfig("custom", {"lambda": self._token_fn(e)})
        self.drop_entities = {e for e in self.entities if cfg.operator_of(e) == "drop_message"}
        self.prefilter = prefilters(keep, self.entities)

    def _token_fn(self, entity: str):
        key = self.secret
        assert key is not None  # the hash operator: the Redactor was built with its secret

        def token(value: str) -> str:
            return f"<{entity}:{hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:HASH_CHARS]}>"

        return token

    # use -------------------------------------------------------------------------------

    def candidates(self, content: pa.Array) -> dict[str, np.ndarray]:
        """entity -> which messages its pre-filter passes (vectorised, one RE2 pass each)."""
        return candidates(self.prefilter, content)

    def analyze(self, texts: list[str], entities: list[str]) -> list[list]:
        return list(
            self.batch.analyze_iterator(
                texts,
                language=self.cfg.language,
                entities=entities,
                score_threshold=self.cfg.score_threshold,
                allow_list=self.cfg.allow or None,
                batch_size=256,
            )
        )

    def findings(self, content: pa.Array, prefilter: bool = True) -> tuple[np.ndarray, list[tuple[str, list]]]:
        """(rows read by Presidio, (text, what was found) for each of them)."""
        if isinstance(content, pa.ChunkedArray):
            content = content.combine_chunks()
        if prefilter:
            masks = self.candidates(content)
        else:
            valid = pc.is_valid(content).to_numpy(zero_copy_only=False)
            masks = {e: valid for e in self.entities}
        names = list(masks)
        if not names:
            return np.zeros(0, np.int64), []
        stacked = np.stack([masks[e] for e in names], axis=1)
        rows = np.flatnonzero(stacked.any(axis=1))
        if not len(rows):
            return rows, []
        texts = content.take(pa.array(rows)).to_pylist()
        # messages asking for the same entities go to Presidio together
        sets = [tuple(names[k] for k in np.flatnonzero(stacked[r])) for r in rows]
        results: list[list] = [[] for _ in rows]
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(sets):
            groups.setdefault(s, []).append(i)
        for ents, idx in groups.items():
            for i, res in zip(idx, self.analyze([texts[i] for i in idx], list(ents))):
                results[i] = res
        return rows, [(texts[i], results[i]) for i in range(len(rows))]

    def redact(self, content: pa.Array, prefilter: bool = True) -> Redacted:
        if isinstance(content, pa.ChunkedArray):
            content = content.combine_chunks()
        n = len(content)
        drop = np.zeros(n, dtype=bool)
        changed = np.zeros(n, dtype=bool)
        out = Redacted(content, drop, changed)
        rows, found = self.findings(content, prefilter)
        out.candidates = len(rows)
        new_rows, new_texts = [], []
        for r, (text, results) in zip(rows.tolist(), found):
            if not results:
                continue
            kinds = {x.entity_type for x in results}
            if kinds & self.drop_entities:
                drop[r] = changed[r] = True
                for x in results:
                    out.found[x.entity_type] += 1
                for k in kinds:
                    out.messages[k] += 1
                continue
            done = self.anonymizer.anonymize(text=text, analyzer_results=results, operators=self.operators)
            removed = Counter(item.entity_type for item in done.items)
            out.found.update(removed)
            out.messages.update(removed.keys())
            if done.text != text:
                changed[r] = True
                new_rows.append(r)
                new_texts.append(done.text)
        if new_rows:
            mask = np.zeros(n, dtype=bool)
            mask[new_rows] = True
            out.content = pc.replace_with_mask(content, pa.array(mask), pa.array(new_texts, pa.string()))
        return out

    @property
    def unfiltered(self) -> list[str]:
        """The entities with no pre-filter: Presidio reads every message for them."""
        return [e for e, x in self.prefilter.items() if x is None]
