"""Redis: chat histories kept one key a session (a list of messages, a string, a hash), read
without writing anything.

Units: one SCAN pass (never KEYS) lists the keys `source.redis.pattern` matches with their
lengths (LLEN / STRLEN / HLEN, pipelined a page at a time); the keys are dealt into
`source.redis.shards` units by a stable hash of the key. A unit's version is a hash over its
sorted (key, length) pairs: a list that grew, a key that vanished or appeared changes its
unit's version, and the manifest reads that unit again (the ledger drops what was delivered;
delivered keys it no longer holds are `gone from source`); an unchanged unit is not read.

A unit is read `page_keys` keys a round trip (LRANGE 0 -1 / GET / HGETALL, pipelined), one
row per element: `key`, `session` (the key less the pattern's prefix), `index` (the
element's position counted from the oldest, so it stays put while the list grows: an LPUSH
list is read from its tail), `value` (its text), and for a hash `field`. Memory is bounded
by a page of keys. `source.redis.app: langchain` decodes each value as LangChain's
{"type", "data"} message (tasks/extract/apps/langchain.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pyarrow as pa

from core.config import Mapping
from core.errors import SourceError, SourceUnavailable
from tasks.extract.blocks import ROW_COLUMN
from tasks.extract.elements import decoded, hand_over
from tasks.extract.kinds import Kind
from tasks.extract.units import Slice, Unit
from tasks.quarantine import BadRow, Reason

#: keys SCAN is asked for per call (a hint to the server: its cost per call, not a limit)
SCAN_COUNT = 1000
#: how each kind's length is asked for, and its elements read
LENGTH = {"list": "llen", "string": "strlen", "hash": "hlen"}
COLUMNS = ("key", "session", "index", "value")


def shard_of(key: bytes, shards: int) -> int:
    """The unit a key belongs to: stable across runs, processes and Python versions."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % shards


def _version(pairs: list[tuple[bytes, int]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for key, n in pairs:
        h.update(key)
        h.update(b"\0%d\n" % n)
    return h.hexdigest()


def safe_url(url: str) -> str:
    """The URL with its password hidden (error messages, reports)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}{f':{parts.port}' if parts.port else ''}"
    return urlunsplit(parts._replace(netloc=netloc))


def _text(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


class RedisSource:
    def __init__(self, mapping: Mapping):
        self.mapping = mapping
        assert mapping.source.redis is not None  # source.type redis: the config requires the redis section
        self.cfg = mapping.source.redis
        try:
            self.url = self.cfg.resolved_url()
        except ValueError as exc:
            raise SourceError(mapping.source.name, "source.redis", str(exc)) from None
        self.safe_url = safe_url(self.url)
        self.high_water: Any = None  # unused: a Redis source's state is the manifest of its shards
        self._client: Any = None
        self._keys: dict[str, list[bytes]] | None = None  # rel -> its keys, sorted (the listing)
        self.app = None
        if self.cfg.app == "langchain":
            from tasks.extract.apps.langchain import LangChainRows

            self.app = LangChainRows(str(mapping.constants.get("user_separator") or ""))

    def _fail(self, exc: Exception, doing: str) -> SourceError:
        """The error to raise: SourceUnavailable when Redis did not answer (refused, dropped,
        timed out, busy loading its data), so an orchestrator retries; SourceError for the rest
        (a wrong password or user is an AuthenticationError, a subclass of ConnectionError)."""
        import redis.exceptions as rx

        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        down = isinstance(exc, (rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError)) and not isinstance(
            exc, (rx.AuthenticationError, rx.AuthorizationError)
        )
        return (SourceUnavailable if down else SourceError)(self.mapping.source.name, self.safe_url, f"{doing}: {text}")

    def _redis(self):
        if self._client is None:
            import redis

            try:
                self._client = redis.Redis.from_url(self.url, socket_connect_timeout=10, socket_timeout=60)
            except ValueError as exc:
                raise self._fail(exc, "not a Redis URL") from None
        return self._client

    def _rel(self, i: int) -> str:
        return f"redis {self.cfg.pattern} shard {i}/{self.cfg.shards}"

    def units(self, part: Slice) -> list[Unit]:
        listing = self._list()
        return [u for u in listing if not part.units or u.rel in part.units]

    def _list(self) -> list[Unit]:
        """One SCAN pass: every key with its length, dealt into shards."""
        import redis

        cfg = self.cfg
        shards: list[dict[bytes, int]] = [{} for _ in range(cfg.shards)]
        page: list[bytes] = []

        def lengths() -> None:
            pipe = self._redis().pipeline(transaction=False)
            for key in page:
                getattr(pipe, LENGTH[cfg.value])(key)
            for key, n in zip(page, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(n, Exception):
                    n = -1  # a key of another kind: listed, and quarantined when read
                if n:  # 0: gone since SCAN named it (or an empty string)
                    shards[shard_of(key, cfg.shards)][key] = n
            page.clear()

        try:
            for key in self._redis().scan_iter(match=cfg.pattern, count=SCAN_COUNT):
                page.append(key)
                if len(page) >= cfg.page_keys:
                    lengths()
            if page:
                lengths()
        except redis.RedisError as exc:
            raise self._fail(exc, "cannot list keys") from None
        units, self._keys = [], {}
        for i, held in enumerate(shards):
            pairs = sorted(held.items())  # SCAN may name a key twice: the dict keeps it once
            rel = self._rel(i)
            self._keys[rel] = [k for k, _ in pairs]
            units.append(Unit(rel=rel, size=sum(max(n, 0) for _, n in pairs), version=_version(pairs), path=rel))
        return units

    def schema(self, unit: Unit) -> pa.Schema:
        for _, rb in self.iter_batches(unit, []):
            return pa.schema([f for f in rb.schema if f.name != ROW_COLUMN])
        return pa.schema([])

    def iter_batches(self, unit: Unit, bad: list[BadRow] | None = None) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Yield (row offset in the unit, batch) a page of keys at a time. An element that is
        not text, a key of another kind, a value the app cannot decode: a BadRow each (without
        a list, the first one stops the unit)."""
        import redis

        if self._keys is None or unit.rel not in self._keys:
            self._list()
        assert self._keys is not None  # listed above
        keys = self._keys.get(unit.rel, [])
        offset = 0
        step = self.cfg.page_keys
        for start in range(0, len(keys), step):
            chunk = keys[start : start + step]
            try:
                values = self._read(chunk)
            except redis.RedisError as exc:
                raise self._fail(exc, f"cannot read {unit.rel}") from None
            sink: list[BadRow] = []
            rb, n = self._batch(chunk, values, offset, sink)
            hand_over(self.mapping.source.name, unit.rel, sink, bad)
            if rb.num_rows:
                yield offset, rb
            offset += n

    def _read(self, keys: list[bytes]) -> list:
        pipe = self._redis().pipeline(transaction=False)
        for key in keys:
            if self.cfg.value == "list":
                pipe.lrange(key, 0, -1)
            elif self.cfg.value == "string":
                pipe.get(key)
            else:
                pipe.hgetall(key)
        return pipe.execute(raise_on_error=False)

    def _elements(self, value) -> list[tuple[int | None, bytes | None, bytes]]:
        """(index from the oldest, hash field, element) of one key's value."""
        if value is None:
            return []  # gone since it was listed
        if self.cfg.value == "string":
            return [(0, None, value)]
        if self.cfg.value == "hash":
            return [(None, f, v) for f, v in sorted(value.items())]
        if self.cfg.push == "left":  # LPUSH: the newest at the head; the oldest keeps its place from the tail
            value = value[::-1]
        return [(i, None, v) for i, v in enumerate(value)]

    def _batch(self, keys: list[bytes], values: list, offset: int, bad: list[BadRow]) -> tuple[pa.RecordBatch, int]:
        """A page's rows (and how many records it held, bad ones counted)."""
        prefix = self.cfg.prefix.encode()
        cols: dict[str, list] = {c: [] for c in (*COLUMNS, "field")}
        rows: list[int] = []
        n = 0
        for key, value in zip(keys, values, strict=True):
            name = _text(key)
            if isinstance(value, Exception):
                kind = f"not a {self.cfg.value}"
                bad.append(BadRow(offset + n, f"key {name}", Reason(kind, f"{kind}: {value}")))
                n += 1
                continue
            session = _text(key[len(prefix) :] if key.startswith(prefix) else key)
            limit = self.mapping.source.max_record_bytes
            for index, field, raw in self._elements(value):
                if len(raw) > limit:  # as every reader: quarantined with its size, not loaded
                    where = f"key {name} {'index ' + str(index) if field is None else 'field ' + _text(field)}"
                    size = f"{len(raw):,} bytes, more than source.max_record_bytes={limit:,}"
                    bad.append(BadRow(offset + n, where, Reason("too long", size)))
                    n += 1
                    continue
                try:
                    text = raw.decode("utf-8")
                    fname = None if field is None else field.decode("utf-8")
                except UnicodeDecodeError as exc:
                    where = f"key {name} {'index ' + str(index) if field is None else 'field ' + _text(field)}"
                    bad.append(
                        BadRow(
                            offset + n,
                            where,
                            Reason("not UTF-8", f"not UTF-8: {exc.reason} at byte {exc.start}"),
                            repr(raw[:2000]),
                        )
                    )
                    n += 1
                    continue
                for c, v in zip((*COLUMNS, "field"), (name, session, index, text, fname), strict=True):
                    cols[c].append(v)
                rows.append(offset + n)
                n += 1
        arrays = [
            pa.array(cols["key"], pa.string()),
            pa.array(cols["session"], pa.string()),
            pa.array(cols["index"], pa.int64()),
            pa.array(cols["value"], pa.string()),
        ]
        names = list(COLUMNS)
        if self.cfg.value == "hash":
            arrays.append(pa.array(cols["field"], pa.string()))
            names.append("field")
        rb = pa.RecordBatch.from_arrays(arrays, names=names)
        pos = np.asarray(rows, dtype=np.int64)
        if self.app is not None:
            return decoded(self.app, rb, pos, bad, len(rows) == n), n
        if len(rows) != n:  # bad records among them: each row's own place in the unit
            rb = rb.append_column(ROW_COLUMN, pa.array(pos))
        return rb, n


#: source.type redis: shards by the manifest of their versions; no server stops the source
KIND = Kind(RedisSource, connected=True, bytes_per_row=1)  # a shard's size: its elements (a string: its bytes)
