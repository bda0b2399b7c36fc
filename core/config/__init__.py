"""Typed configuration: source mappings (schemas/mappings/*.yaml) and run settings.

* mapping.py  source mappings (the Mapping model, fields, attachments, checks)
* source.py   their `source:` section (files, S3, SQL, Delta, Iceberg)
* roles.py    their `roles:` section (who speaks)
* people.py   one person across apps (`people:`, in a mapping or the run config)
* nest.py     their `nest:` section (nested records)
* redact.py   their `redact:` section (personal data)
* loading.py  a mapping from its file, with its preset
* run.py      run settings: target, load, state, backfill; environment overrides
* files.py    YAML, validation, merge

Everything is validated when loaded, and every error names the file and the key, so a bad
config stops a run before a single row is read or a request is sent.
"""

from __future__ import annotations

from core.config.files import merge
from core.config.loading import PRESETS, load_mapping, preset_mapping, preset_names, with_preset
from core.config.mapping import (
    AttachmentColumn,
    Attachments,
    ChecksConfig,
    ContentAppend,
    Fields,
    Mapping,
    SkipRule,
    Template,
    TimeConfig,
)
from core.config.nest import MediaText, NestConfig, NestLevel, Perspectives
from core.config.people import APPS, Person
from core.config.redact import RedactConfig, RedactOperator, RedactPattern
from core.config.roles import DEFAULT_ROLE_MAP, RolesConfig
from core.config.run import (
    ENV_PREFIX,
    BackfillConfig,
    LoadConfig,
    RunConfig,
    StateConfig,
    TargetConfig,
    env_overrides,
    load_run_config,
    normalise_url,
)
from core.config.source import DeltaConfig, IcebergConfig, S3Config, SourceConfig, SqlConfig

__all__ = [
    "APPS",
    "BackfillConfig",
    "ChecksConfig",
    "AttachmentColumn",
    "Attachments",
    "ContentAppend",
    "DEFAULT_ROLE_MAP",
    "DeltaConfig",
    "ENV_PREFIX",
    "Fields",
    "IcebergConfig",
    "LoadConfig",
    "Mapping",
    "MediaText",
    "NestConfig",
    "NestLevel",
    "PRESETS",
    "Person",
    "Perspectives",
    "RedactConfig",
    "RedactOperator",
    "RedactPattern",
    "RolesConfig",
    "RunConfig",
    "S3Config",
    "SourceConfig",
    "SqlConfig",
    "StateConfig",
    "TargetConfig",
    "Template",
    "TimeConfig",
    "env_overrides",
    "load_mapping",
    "load_run_config",
    "merge",
    "normalise_url",
    "preset_mapping",
    "preset_names",
    "with_preset",
    "SkipRule",
]
