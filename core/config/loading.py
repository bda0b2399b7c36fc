"""Loading a source mapping: from its file, with its preset (schemas/presets/<name>.yaml)
under the mapping's own keys, validated, and checked as a whole."""

from __future__ import annotations

import os
from pathlib import Path

import schemas
from core.config.files import merge, read_yaml, validate_model
from core.config.mapping import Fields, Mapping
from core.errors import ConfigError


def load_mapping(path: str | os.PathLike) -> Mapping:
    p = Path(path)
    return checked_mapping(validate_model(Mapping, with_preset(read_yaml(p), p), p), p)


PRESETS = Path(schemas.__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def with_preset(data: dict, where: Path) -> dict:
    """A mapping that names a `preset`: the preset's keys, with the mapping's own on top
    (nested sections merged key by key). A preset without a source format takes it from the
    source path's extension."""
    name = data.get("preset") if isinstance(data, dict) else None
    if not name:
        return data
    if name == "auto":
        name, data = _detected(data, where)
    name = _side(name, data.get("perspective"), where)
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(str(where), "preset", f"no preset {name!r} (known: {', '.join(preset_names())})")
    merged = merge(read_yaml(path), data)
    src = merged.setdefault("source", {})
    if not src.get("format") and src.get("path"):
        suffixes = [x.lower() for x in Path(str(src["path"])).suffixes]
        while suffixes and suffixes[-1] in (".gz", ".gzip", ".bz2", ".zst", ".zstd", ".xz", ".zip"):
            suffixes.pop()  # export.jsonl.gz is jsonl; a .zip takes the preset's own format
        ext = {
            ".jsonl": "jsonl",
            ".ndjson": "jsonl",
            ".json": "json",
            ".parquet": "parquet",
            ".csv": "csv",
            ".tsv": "csv",
        }.get(suffixes[-1] if suffixes else "")
        if ext:
            src["format"] = ext
    return merged


def _side(name: str, perspective, where: Path) -> str:
    """The preset of a group chat's side `perspective` asks for: `<name>-each` loads it into
    every participant's memory (or the listed ones'), `<name>` into the exporting person's."""
    if perspective is None:
        return name
    base = name.removesuffix("-each")
    each = f"{base}-each"
    if perspective == "self":
        return base
    if (PRESETS / f"{each}.yaml").is_file():
        return each
    raise ConfigError(
        str(where),
        "perspective",
        f"preset {base!r} loads a chat from one side only (perspective: self); "
        f"presets with each participant's side: {', '.join(n for n in preset_names() if n.endswith('-each'))}",
    )


def preset_mapping(name: str, path: str | os.PathLike, overrides: dict | None = None) -> Mapping:
    """A preset applied to an input path (file, directory or glob), e.g. for `preview`."""
    where = Path(f"preset:{name}")
    data = merge({"preset": name, "source": {"path": str(Path(path).resolve())}}, overrides or {})
    return checked_mapping(validate_model(Mapping, with_preset(data, where), where), where)


def checked_mapping(mapping: Mapping, p: Path) -> Mapping:
    mapping.path_ = p
    for field in Fields.model_fields:
        try:
            mapping.template(field)
        except ValueError as exc:
            raise ConfigError(str(p), f"fields.{field}", str(exc)) from None
    if mapping.source.format == "json" and mapping.nest is None:
        raise ConfigError(str(p), "nest", "format json is read record by record: describe the records with nest")
    if mapping.fields.role is None and mapping.roles.speaker_column is None:
        raise ConfigError(str(p), "fields.role", "set a role column, or roles.speaker_column for dialogues")
    if mapping.roles.user_speaker_column and not mapping.roles.speaker_column:
        raise ConfigError(
            str(p), "roles.user_speaker_column", "compares each row's speaker with it: set roles.speaker_column too"
        )
    for i, who in enumerate(mapping.roles.user_speakers):
        name = who[1:-1] if who.startswith("{") and who.endswith("}") else None
        if name is not None and not mapping.constants.get(name):
            raise ConfigError(
                str(p),
                f"constants.{name}",
                f"roles.user_speakers[{i}] is {who}: set constants.{name} to the id of the person whose "
                "side this is (their messages are the user's, everyone else's the assistant's)",
            )
    if mapping.roles.user_speaker_column and mapping.roles.user_speakers:
        raise ConfigError(
            str(p),
            "roles.user_speaker_column",
            "set either user_speakers (the same people everywhere) or user_speaker_column (per row)",
        )
    return mapping


def _detected(data: dict, where: Path) -> tuple[str, dict]:
    """`preset: auto`: the one preset the source's files match (core/config/detect.py), with
    what that match sets; anything else stops with what was found or looked for."""
    from core.config.detect import LOOKED_FOR, detect

    src = data.get("source") or {}
    if not src.get("path"):
        raise ConfigError(str(where), "preset", "preset auto sniffs source.path: set it (or name the preset)")
    p = Path(str(src["path"]))
    if not p.is_absolute() and where.parent != Path("."):
        p = where.parent / p
    matches = [m for m in detect(p) if m.preset]
    presets = sorted({m.preset for m in matches if m.preset})
    if len(presets) != 1:
        found = "; ".join(f"{m.preset}: {m.what} ({', '.join(m.files[:3])})" for m in matches)
        raise ConfigError(
            str(where),
            "preset",
            f"preset auto found {'several formats' if presets else 'no format it knows'} in {p}: "
            + (found or f"looked for {LOOKED_FOR}")
            + "; name the preset",
        )
    match = next(m for m in matches if m.preset == presets[0])
    chosen = merge(match.settings, {**data, "preset": presets[0]})
    chosen["preset_detected"] = f"{presets[0]} ({match.what}; {', '.join(match.files[:3])})"
    return presets[0], chosen
