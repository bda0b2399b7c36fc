"""Reading config files: YAML, validation into the typed models (errors that name the file
and the key), and the recursive merge that layers presets, files, environment and overrides."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), "-", "file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "-", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "-", "expected a mapping at the top level")
    return data


def validate_model(model: type[BaseModel], data: dict, path: Path):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "-"
        raise ConfigError(str(path), key, err["msg"]) from None


def merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, recursively for nested sections."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
