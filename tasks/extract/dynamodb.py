"""DynamoDB: chat histories kept one item a session (LangChain's DynamoDBChatMessageHistory:
the messages in a list attribute, `History`), read without writing anything.

Units: a Scan's parallel segments (`source.dynamodb.segments`; DynamoDB puts an item in the
segment its partition key hashes to, so an item stays in its segment from run to run), or one
Query by the partition key's value (`key`, on the table or on a secondary `index`). A table has
no change feed this source reads (DynamoDB Streams keep 24 hours), so how a run finds what is
new depends on the table:

* no `cursor`: every run reads every unit; the ledger drops what was delivered (a re-run sends
  nothing), and delivered messages an item no longer holds (a deleted item) are `gone from
  source`, as with files read again;
* `cursor: <attribute>` (an `updated_at`, a version that every write moves forward): one unit
  filtered to items at or after the last run's highest value (the server still reads the whole
  table, the filter saves the transfer and the parsing); removals are found by `reconcile`.

Rows: `key` (the item's key as text: the partition key's value, or `[partition, sort]` as JSON
for a table with a sort key), `session` (the same text), the key attributes by their own names,
and with `messages: <attribute>` one row per element of that list with `index` (its place from
the oldest) and `value` (its JSON); without it one row per item with `item` (the whole item as
JSON). DynamoDB's typed values are read as plain JSON: numbers (DynamoDB's Decimal) as integers
where they are whole, else as floats; sets as sorted lists; binary as base64 text. An item is
at most 400 KB in DynamoDB, under any `max_record_bytes`, so no element is too long to read.
`app: langchain` decodes each element as LangChain's {"type", "data"} message.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from core.config import Mapping
from core.errors import SourceError, SourceUnavailable
from tasks.cursor import later
from tasks.extract.blocks import ROW_COLUMN
from tasks.extract.elements import decoded, hand_over
from tasks.extract.kinds import Kind
from tasks.extract.s3 import aws_unavailable, s3_credentials
from tasks.extract.units import Slice, Unit
from tasks.quarantine import BadRow, Reason


def plain(value: Any) -> Any:
    """A deserialised DynamoDB value as JSON can hold it."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    if hasattr(value, "value") and isinstance(value.value, (bytes, bytearray)):  # boto3's Binary
        return base64.b64encode(bytes(value.value)).decode()
    return value


def _text(value: Any) -> str | None:
    """A key or scalar attribute as text (a column)."""
    value = plain(value)
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _bound(value: Any) -> Any:
    """A cursor bound as DynamoDB compares it: numbers as numbers, times as ISO text."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, (int, Decimal, str)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


class DynamoDBSource:
    def __init__(self, mapping: Mapping):
        self.mapping = mapping
        assert mapping.source.dynamodb is not None  # source.type dynamodb: the config requires its section
        self.cfg = mapping.source.dynamodb
        self.label = f"dynamodb {self.cfg.table}"
        self.high_water: Any = None  # cursor mode: the highest cursor value read
        self._client: Any = None
        self._keys: tuple[str, str | None] | None = None  # partition and sort key names
        self._bytes = 0  # the table's size as DescribeTable gives it
        self.app = None
        if self.cfg.app == "langchain":
            from tasks.extract.apps.langchain import LangChainRows

            self.app = LangChainRows(str(mapping.constants.get("user_separator") or ""))

    def _fail(self, exc: Exception, doing: str) -> SourceError:
        """The error to raise: SourceUnavailable when DynamoDB did not answer or said to come
        back later (unreachable, timed out, a 5xx, throttling past botocore's retries), so an
        orchestrator retries; SourceError for the rest (a missing table, access denied)."""
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            text = f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip().rstrip(":")
        else:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"{self.label} ({self.cfg.endpoint_url or self.cfg.region})"
        down = aws_unavailable(exc)
        return (SourceUnavailable if down else SourceError)(self.mapping.source.name, where, f"{doing}: {text}")

    def _dynamodb(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "dynamodb",
                endpoint_url=self.cfg.endpoint_url,
                region_name=self.cfg.region,
                config=Config(
                    retries={"max_attempts": 10, "mode": "adaptive"},  # throttling waits, then goes on
                    connect_timeout=10,
                    read_timeout=60,
                ),
                **s3_credentials(self.cfg.credentials_block),
            )
        return self._client

    def _key_names(self) -> tuple[str, str | None]:
        if self._keys is None:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                table = self._dynamodb().describe_table(TableName=self.cfg.table)["Table"]
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "cannot read the table") from None
            schema = {k["KeyType"]: k["AttributeName"] for k in table["KeySchema"]}
            self._keys = (schema["HASH"], schema.get("RANGE"))
            # DynamoDB's own figures, updated about every six hours: what the run sizes its
            # conversation buckets by (an item taken as at least 1 KB: errs towards more buckets)
            self._bytes = max(int(table.get("TableSizeBytes") or 0), int(table.get("ItemCount") or 0) * 1024)
        return self._keys

    # -- units ---------------------------------------------------------------------------
    def start(self, stored: Any) -> Any:
        """Where a nightly cursor run starts: at the last run's highest value, inclusive (the
        items written at that value are read again; the ledger drops what was delivered)."""
        return stored

    def units(self, part: Slice) -> list[Unit]:
        self._key_names()  # no table, no credentials: one clear error before anything is read
        cfg = self.cfg
        if cfg.cursor is not None:
            rng = f"[{'' if part.since is None else part.since}, {'' if part.until is None else part.until})"
            units = [Unit(rel=f"{self.label} {cfg.cursor} {rng}", size=self._bytes, lo=part.since, hi=part.until)]
        else:
            # read on every run: a version no listing repeats (the ledger knows what was delivered)
            version = f"read {time.time_ns()}"
            if cfg.key is not None:
                ((name, value),) = cfg.key.items()
                rels = [f"{self.label} {cfg.index or 'table'} {name}={value}"]
            else:
                rels = [f"{self.label} segment {i}/{cfg.segments}" for i in range(cfg.segments)]
            size = self._bytes // len(rels)
            units = [Unit(rel=rel, size=size, version=version, path=rel) for rel in rels]
        return [u for u in units if not part.units or u.rel in part.units]

    def schema(self, unit: Unit) -> pa.Schema:
        for _, rb in self.iter_batches(unit, []):
            return pa.schema([f for f in rb.schema if f.name != ROW_COLUMN])
        return pa.schema([])

    # -- reading -------------------------------------------------------------------------
    def _request(self, unit: Unit) -> tuple[str, dict]:
        """The call and its arguments that read a unit, page by page."""
        cfg = self.cfg
        args: dict[str, Any] = {"TableName": cfg.table, "Limit": cfg.page_items, "ConsistentRead": cfg.consistent_read}
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        where: list[str] = []
        if cfg.cursor is not None:
            from boto3.dynamodb.types import TypeSerializer

            for op, bound, tag in ((">=", unit.lo, ":lo"), ("<", unit.hi, ":hi")):
                if bound is not None:
                    values[tag] = TypeSerializer().serialize(_bound(bound))
                    where.append(f"#c {op} {tag}")
                    names["#c"] = cfg.cursor
        call = "scan"
        if cfg.key is not None:
            from boto3.dynamodb.types import TypeSerializer

            call = "query"
            ((name, value),) = cfg.key.items()
            names["#k"] = name
            values[":k"] = TypeSerializer().serialize(value)
            args["KeyConditionExpression"] = "#k = :k"
            if cfg.index:
                args["IndexName"] = cfg.index
                args.pop("ConsistentRead")  # a global index reads eventually consistent only
        elif cfg.cursor is None and cfg.segments > 1:
            i = int(unit.rel.rsplit(" ", 1)[1].split("/")[0])
            args.update(Segment=i, TotalSegments=cfg.segments)
        if where:
            args["FilterExpression"] = " AND ".join(where)
        if names:
            args["ExpressionAttributeNames"] = names
        if values:
            args["ExpressionAttributeValues"] = values
        return call, args

    def iter_batches(self, unit: Unit, bad: list[BadRow] | None = None) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Yield (row offset in the unit, batch) a page of items at a time. An item without its
        list of messages, an element that is not an object, a value the app cannot decode: a
        BadRow each (without a list, the first one stops the unit)."""
        from boto3.dynamodb.types import TypeDeserializer
        from botocore.exceptions import BotoCoreError, ClientError

        keys = self._key_names()
        call, args = self._request(unit)
        typed = TypeDeserializer()
        offset = 0
        while True:
            try:
                page = getattr(self._dynamodb(), call)(**args)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, f"cannot read {unit.rel}") from None
            items = [{k: typed.deserialize(v) for k, v in item.items()} for item in page.get("Items", [])]
            sink: list[BadRow] = []
            rb, n = self._batch(items, keys, offset, sink)
            hand_over(self.mapping.source.name, unit.rel, sink, bad)
            if rb.num_rows:
                yield offset, rb
            offset += n
            if "LastEvaluatedKey" not in page:
                return
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _batch(
        self, items: list[dict], keys: tuple[str, str | None], offset: int, bad: list[BadRow]
    ) -> tuple[pa.RecordBatch, int]:
        """A page's rows (and how many records it held, bad ones counted)."""
        hash_name, range_name = keys
        attrs = [hash_name, *([range_name] if range_name else [])]
        listed = self.cfg.messages
        cols: dict[str, list] = {c: [] for c in ("key", "session", *attrs, "index", "value", "item")}
        rows: list[int] = []
        n = 0
        for item in items:
            parts = [plain(item.get(a)) for a in attrs]
            key = _text(parts[0]) if range_name is None else json.dumps(parts, ensure_ascii=False)
            if self.cfg.cursor is not None:
                self.high_water = later(self.high_water, plain(item.get(self.cfg.cursor)))
            if listed is None:
                elements: list[tuple[int | None, str]] = [(None, json.dumps(plain(item), ensure_ascii=False))]
            else:
                held = item.get(listed)
                if not isinstance(held, list):
                    what = "absent" if held is None else f"a {type(plain(held)).__name__}, not a list"
                    bad.append(BadRow(offset + n, f"key {key}", Reason("no list of messages", f"{listed}: {what}")))
                    n += 1
                    continue
                elements = [(i, json.dumps(plain(v), ensure_ascii=False)) for i, v in enumerate(held)]
            for index, text in elements:
                cols["key"].append(key)
                cols["session"].append(key)
                for a in attrs:
                    cols[a].append(_text(item.get(a)))
                cols["index"].append(index)
                cols["value" if listed else "item"].append(text)
                rows.append(offset + n)
                n += 1
        names = ["key", "session", *(a for a in attrs if a not in ("key", "session", "index", "value", "item"))]
        arrays = [pa.array(cols[c], pa.string()) for c in names]
        if listed is not None:
            names += ["index", "value"]
            arrays += [pa.array(cols["index"], pa.int64()), pa.array(cols["value"], pa.string())]
        else:
            names.append("item")
            arrays.append(pa.array(cols["item"], pa.string()))
        rb = pa.RecordBatch.from_arrays(arrays, names=names)
        pos = np.asarray(rows, dtype=np.int64)
        if self.app is not None and listed is not None:
            return decoded(self.app, rb, pos, bad, len(rows) == n), n
        if len(rows) != n:  # bad records among them: each row's own place in the unit
            rb = rb.append_column(ROW_COLUMN, pa.array(pos))
        return rb, n


def _style(mapping: Mapping):
    cfg = mapping.source.dynamodb
    return "cursor" if cfg is not None and cfg.cursor is not None else "manifest"


#: source.type dynamodb: a cursor attribute's range, else every unit on every run (the ledger
#: drops what was delivered); no table or no credentials stops the source
KIND = Kind(DynamoDBSource, plan=_style, connected=True)
