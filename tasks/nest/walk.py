"""The walked explode: Python per record, for what Arrow cannot type (content that is a
string here and parts there, trees, numbered keys, perspectives, a bad line in the batch).
Rows still come out as Arrow columns."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Sequence

import orjson
import pyarrow as pa

from core.config import MediaText, NestConfig, NestLevel
from core.errors import NestError
from tasks.extract.records import RECORD_COLUMN, parsed_records
from tasks.nest.columns import decoded, dotted, json_heads, not_a_chat
from tasks.nest.rows import ABANDONED, BRANCH, PERSPECTIVE, RECORD, TRAFFIC, Exploded
from tasks.nest.traffic import traffic_kind
from tasks.nest.tree import off_path, paths
from tasks.quarantine import POSITION


def explode_walk(
    rb: pa.RecordBatch,
    nest: NestConfig,
    offset: int,
    row_column: str,
    skip: Sequence = (),
    only: Collection[str] | None = None,
    wanted: Collection[str] | None = None,
) -> Exploded:
    """The Python walk: any shape the mapping can describe, record by record. `wanted`: the
    flattened names the mapping reads (Mapping.walked_columns); the others are not made
    columns at all (None: every field, as `preview` and the first-batch check show them)."""
    known = parsed_records(rb)
    if known is not None:  # parsed by the reader that made the batch
        records: list = known
        texts: list = []
    elif RECORD_COLUMN in rb.schema.names:
        texts = rb.column(RECORD_COLUMN).to_pylist()
        records = []
        for t in texts:
            try:
                records.append(orjson.loads(t))  # the fast parser; Python's where it refuses
                continue
            except (orjson.JSONDecodeError, TypeError):
                pass
            try:  # big integers, NaN, lone surrogates; and the error message of record
                records.append(json.loads(t))
            except ValueError as exc:
                records.append(NestError(f"not JSON: {exc}"))
            except RecursionError:
                records.append(NestError("not JSON: nested deeper than Python can read"))
    else:
        records = rb.to_pylist()
    rows: list[dict] = []
    out = Exploded(pa.table({}))
    # path -> how its value becomes text: "parts" (to_text), "inline" (runs of one text) or
    # "keep" (JSON as it is: attachments)
    text_paths = {
        **{t: "keep" for t in nest.keep},
        **{t: "parts" for t in nest.text},
        **{t: "inline" for t in nest.inline},
    }
    # the wanted names and every dotted prefix of them (the objects that hold them), by prefix
    plans = _plans({p for w in wanted for p in _prefixes(w)}, text_paths) if wanted is not None else None
    rules = [(r.column, set(r.values)) for r in skip]
    traffic_rules = [(set(r.values), r.kind or r.column) for r in skip if r.column == TRAFFIC]
    needed, heads = json_heads(nest, wanted)
    for i, rec in enumerate(records):
        where = offset + i
        try:
            if isinstance(rec, NestError):
                raise rec
            if not isinstance(rec, dict):
                raise NestError(f"record is {_kind(rec)}, not an object")
            if heads:
                rec = decoded(rec, needed, heads)
            if nest.skip_records and (kind := not_a_chat(rec, nest)) is not None:
                out.kinds[f"{kind}: record"] += 1
                continue
            base: dict = {}
            # the nested values themselves are walked below, not copied into every row; of an
            # object holding them (a dialogue's `conversation`) its plain fields are kept
            roots = {_root(lv.column) for lv in nest.levels if lv.column}
            _flatten(rec, "", base, text_paths, nest.media, skip=roots, plans=plans)
            for r in roots:
                if isinstance(rec.get(r), dict):
                    base.update(
                        {
                            f"{r}.{k}": v
                            for k, v in rec[r].items()
                            if (v is None or isinstance(v, (str, int, float, bool)))
                            and (plans is None or any(k == p[0] for p in plans.get(f"{r}.", ())))
                        }
                    )
            found: list[dict] = []
            kinds: Counter = Counter()
            skipped = _walk(rec, nest, text_paths, 0, base, {}, found, rules, plans, (traffic_rules, kinds))
        except NestError as exc:
            out.bad.append((where, f"nest: {exc}", rec if not isinstance(rec, NestError) else texts[i]))
            continue
        except RecursionError:  # a value nested deeper than Python recurses (the readers cap at 200)
            raw = texts[i] if texts else "(not kept: nested too deep to write back; see its place in the source)"
            out.bad.append((where, "nest: nested deeper than Python can walk", raw))
            continue
        out.skipped += skipped
        out.kinds.update(kinds)
        for pos, row in enumerate(found):
            row[POSITION] = pos
            row[RECORD] = where
            row[row_column] = where
        if nest.perspectives is not None:
            found = _perspectives(rec, found, nest, only)
        rows.extend(found)
    out.table = _to_table(rows)
    return out


def _walk(
    rec: dict,
    nest: NestConfig,
    text_paths: dict,
    depth: int,
    flat: dict,
    scope: dict,
    out: list[dict],
    rules: list[tuple[str, set[str]]],
    plans: dict | None = None,
    marked: tuple[list, Counter] | None = None,
) -> int:
    """Depth-first over the levels; appends one flat dict per innermost element. Rows marked
    as traffic that a skip rule on that column takes are counted in marked[1], not appended."""
    level = nest.levels[depth]
    skipped = 0
    deeper = {lv.column for lv in nest.levels[depth + 1 :] if lv.column}  # walked below, not copied
    shown = -1  # with nest.abandoned mark: how many of a tree's elements are on the path shown
    if level.kind == "tree":
        elems, tags = _tree_elements(rec, level, scope, nest.branches == "all")
        if nest.abandoned == "mark" and nest.branches == "visible":
            shown = len(elems)
            extra = off_path(_resolve(rec, scope, level.column), level, elems)
            elems, tags = elems + extra, tags + [""] * len(extra)
    else:
        elems, tags = _elements(rec, level, scope), []
    tree, prefix, index = level.kind == "tree", level.name + ".", f"{level.name}.index"  # the same for every element
    for idx, elem in enumerate(elems):
        row = dict(flat)
        if tree:
            row[BRANCH] = tags[idx]
            if shown >= 0:
                row[ABANDONED] = idx >= shown
        if isinstance(elem, dict):
            _flatten(
                elem,
                prefix,
                row,
                text_paths,
                nest.media,
                skip={k for k in elem if f"{prefix}{k}" in deeper} if deeper else _NOTHING,
                plans=plans,
            )
        else:
            row[f"{level.name}.value"] = elem
        row[index] = idx
        if level.traffic is not None:
            kind = traffic_kind(elem, level.traffic)
            if kind in ("call", "result") and nest.tools == "keep":
                row[f"{level.name}.{level.traffic.role}"], kind = "tool", None
            if kind is not None:  # set only where it applies: a row's every key costs memory
                row[TRAFFIC] = kind
        if depth + 1 < len(nest.levels):
            skipped += _walk(
                rec, nest, text_paths, depth + 1, row, {**scope, level.name: elem}, out, rules, plans, marked
            )
            continue
        if marked is not None and TRAFFIC in row:
            taken = next((kind for values, kind in marked[0] if row[TRAFFIC] in values), None)
            if taken is not None:
                marked[1][f"{taken}: {row[TRAFFIC]}"] += 1
                continue
        if (
            nest.skip_empty
            and text_paths
            and all(_empty(row.get(t), how == "keep") for t, how in text_paths.items())
            and not any(_as_text(row.get(c)) in values for c, values in rules)  # theirs to count
        ):
            skipped += 1
            continue
        out.append(row)
    return skipped


def _elements(rec: dict, level: NestLevel, scope: dict) -> list:
    if level.kind == "list":
        value = _resolve(rec, scope, level.column)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise NestError(f"{level.column} is text but not JSON: {exc}") from None
        if value is None:
            raise NestError(f"{level.column} is missing")
        if not isinstance(value, list):
            raise NestError(f"{level.column} is {_kind(value)}, not a list")
        return value
    if level.kind == "numbered":
        obj = _resolve(rec, scope, level.column) if level.column else rec
        if not isinstance(obj, dict):
            raise NestError(f"{level.column or 'record'} is {_kind(obj)}, not an object")
        assert level.pattern is not None  # a numbered level has its pattern (config validation)
        rx = re.compile("^" + re.escape(level.pattern).replace(re.escape("{n}"), r"(\d+)") + "$")
        numbered = sorted((int(m.group(1)), k) for k in obj if isinstance(k, str) and (m := rx.match(k)))
        if not numbered:
            raise NestError(f"no keys like {level.pattern!r} in {level.column or 'record'}")
        elems = []
        for n, key in numbered:
            e = {"n": n, "items": obj[key]}
            for name, pattern in level.fields.items():
                e[name] = obj.get(pattern.replace("{n}", str(n)))
            elems.append(e)
        return elems
    return _tree_elements(rec, level, scope, everything=False)[0]


def _tree_elements(rec: dict, level: NestLevel, scope: dict, everything: bool) -> tuple[list, list[str]]:
    """A tree's elements, path after path (the shown one first), and each one's branch tag."""
    nodes = _resolve(rec, scope, level.column)
    if isinstance(nodes, list) and level.id:
        current = None
    elif not isinstance(nodes, dict):
        raise NestError(f"{level.column} is {_kind(nodes)}, not an object of nodes")
    else:
        current = _resolve(rec, scope, level.current) if level.current else None
        if not nodes and current is None:
            return [], []  # a chat opened and never written in
        if level.current and current is None:
            raise NestError(f"{level.current} is missing: which branch to follow is unknown")
    elems, tags = [], []
    for tag, path in paths(nodes, level, current, everything):
        for n in path:
            v = n if level.value is None else n.get(level.value)
            if v is not None:
                elems.append(v)
                tags.append(tag)
    return elems, tags


def _perspectives(rec: dict, rows: list[dict], nest: NestConfig, only: Collection[str] | None = None) -> list[dict]:
    """One copy of the record's rows per speaker named by perspectives.of (of those in
    `only`, the mapping's perspective list, when it has one)."""
    p = nest.perspectives
    assert p is not None  # called only when the mapping has perspectives
    out = []
    if p.of == "speakers":  # everyone who speaks, in order of their first word
        holders = {
            str(r[p.speaker]): None
            for r in rows
            if r.get(p.speaker) is not None and not any(_as_text(r.get(c)) in v for c, v in p.unless.items())
        }
        whos: list = list(holders)
    else:
        whos = [_resolve(rec, {}, path) for path in p.of]
    for who in whos:
        if who is None or (only is not None and str(who) not in only):
            continue  # a one-speaker record; its rows come once, from the other speaker's view
        for r in rows:
            c = dict(r)
            c[PERSPECTIVE] = str(who)
            speaker = r.get(p.speaker)
            c[f"{PERSPECTIVE}.role"] = (
                None if speaker is None else ("user" if str(speaker) == str(who) else "assistant")
            )
            out.append(c)
    return out


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _plans(wanted: Collection[str], text_paths: dict) -> dict[str, list[tuple[str, str, str | None]]]:
    """For each object prefix ("", "msg.", "msg.author."), the (key, flattened name, how it
    becomes text) of the fields wanted under it: the walk then looks up those keys instead of
    going over every key."""
    plans: dict[str, list[tuple[str, str, str | None]]] = {}
    for name in sorted(wanted):
        head, _, key = name.rpartition(".")
        plans.setdefault(f"{head}." if head else "", []).append((key, name, text_paths.get(name)))
    return plans


_MISSING = object()
_NOTHING: frozenset = frozenset()


def _flatten(
    obj: dict,
    prefix: str,
    out: dict,
    text_paths: dict,
    media: MediaText,
    skip: Collection[str] = frozenset(),
    plans: dict | None = None,
) -> None:
    """An object's fields into `out` under dotted names: every field, or with `plans` only
    the wanted ones (looked up by key)."""
    if plans is None:
        for k, v in obj.items():
            if k not in skip:
                name = f"{prefix}{k}"
                _put(out, name, v, text_paths.get(name), text_paths, media, None)
        return
    for k, name, how in plans.get(prefix, ()):
        v = obj.get(k, _MISSING)
        if v is _MISSING or k in skip:
            continue
        if how is None and not isinstance(v, (dict, list)):  # most fields: _put's last case, without the call
            out[name] = v
        else:
            _put(out, name, v, how, text_paths, media, plans)


def _put(out: dict, name: str, v, how: str | None, text_paths: dict, media: MediaText, plans: dict | None) -> None:
    if how == "keep":
        out[name] = v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    elif how is not None:
        out[name] = inline_text(v) if how == "inline" else to_text(v, media)
    elif isinstance(v, dict):
        _flatten(v, name + ".", out, text_paths, media, plans=plans)
    elif isinstance(v, list):
        out[name] = json.dumps(v, ensure_ascii=False, default=str)
    else:
        out[name] = v


def inline_text(value) -> str | None:
    """Text written as runs (Telegram's `text`: a string, or a list of strings and entity
    objects like {type: bold, text}): the runs' text concatenated, markup dropped."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return str(value)
    return "".join(
        run if isinstance(run, str) else str(run.get("text") or "") if isinstance(run, dict) else "" for run in value
    )


def to_text(value, media: MediaText) -> str | None:
    """A message's content as text: strings as they are; lists of parts (OpenAI, ChatGPT
    exports) joined by newlines, with non-text parts written as the `media` placeholders."""
    if value is None or isinstance(value, str):
        return value
    if type(value) is list:
        if not value:
            return ""
        if len(value) == 1:  # one part: most messages
            v = value[0]
            if type(v) is dict and v.get("type") == "text" and type(t := v.get("text")) is str:
                return t
        elif all(type(v) is dict and v.get("type") == "text" and type(v.get("text")) is str for v in value):
            return "\n".join(t for v in value if (t := v["text"]))  # text parts alone: the common case
        pieces = [to_text(v, media) for v in value]
        return "\n".join(p for p in pieces if p)
    if isinstance(value, dict):
        kind = str(value.get("type") or value.get("content_type") or "")
        if "parts" in value and kind in ("", "text", "multimodal_text"):
            return to_text(value["parts"], media)
        if isinstance(value.get("text"), str) and (
            "text" in kind or not kind or kind in ("code", "execution_output", "tether_quote")
        ):
            return value["text"]
        if kind == "tether_browsing_display" and isinstance(value.get("result"), str):
            return value["result"]  # a browsing tool's result (ChatGPT), loaded with nest.tools keep
        if "image" in kind:
            caption = value.get("caption") or value.get("alt_text") or value.get("alt") or value.get("detail_text")
            return media.image_caption.format(caption=caption) if caption else media.image
        if "file" in kind or "document" in kind:
            f = value["file"] if isinstance(value.get("file"), dict) else value
            return media.file.format(name=f.get("filename") or f.get("name") or f.get("file_id") or "?")
        if "audio" in kind:
            return media.audio
        named = value.get("file_name") or value.get("fileName")  # an export's attachment record
        if not kind and isinstance(named, str):
            return media.file.format(name=named)
        return media.other.format(type=kind or "object")
    return str(value)


def _resolve(rec: dict, scope: dict, path: str | None):
    """A dotted path, from an outer level's element (its name first) or from the record."""
    if not path:
        return None
    head, *rest = path.split(".")
    return dotted(scope[head] if head in scope else rec.get(head) if isinstance(rec, dict) else None, rest)


def _root(path: str) -> str:
    return path.split(".", 1)[0]


def _as_text(v) -> str | None:
    """A value as the skip rules compare it (booleans as true/false, like Arrow's cast)."""
    return None if v is None else ("true" if v else "false") if isinstance(v, bool) else str(v)


def _empty(v, json_kept: bool = False) -> bool:
    if json_kept and v in ("[]", "{}", "null"):
        return True
    return v is None or (isinstance(v, str) and not v.strip())


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__
    )


def _to_table(rows: list[dict]) -> pa.Table:
    """Rows of varying keys as columns; a column whose values mix types is kept as text."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    cols = {}
    for n in names:
        values = [r.get(n) for r in rows]
        try:
            arr = pa.array(values)
            if pa.types.is_null(arr.type):
                arr = arr.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arr = pa.array(
                [None if v is None else v if isinstance(v, str) else json.dumps(v, default=str) for v in values],
                pa.string(),
            )
        cols[n] = arr
    return pa.table(cols)


# -- columnar ------------------------------------------------------------------------------
