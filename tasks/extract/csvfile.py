"""CSV read with Arrow's streaming reader, where one bad row costs that row.

- A row with another field count than the header (an extra delimiter, a stray quote) is
  handed to Arrow's `invalid_row_handler` and becomes a BadRow with its text; a quoted field
  that holds newlines is one field of a good row, unless its lines have a delimiter for every
  column: then a quote left open swallowed the rows after it, and the row is a BadRow.
- Text is read without Arrow's UTF-8 check, then each batch's text columns are checked at
  once (a cast to text validates); only a batch that fails is looked at value by value, and a
  row holding bytes that are not UTF-8 is quarantined (or its bytes replaced).
- Columns Arrow types from the first block (a `seq`, a time) keep that type; a later value
  that does not convert stops Arrow's stream, so the file is opened again with that column
  read as text, the rows already read are passed over, and the value is converted batch by
  batch: the row that does not convert is a BadRow, every other row keeps the first type.

Rows are numbered from 0 after the header, bad ones included: a good row's `source_row`
does not move when a bad row before it is fixed. `where` counts rows from 1 after the header.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from core.errors import RowTooLong
from tasks.extract.blocks import ROW_COLUMN
from tasks.quarantine import PREVIEW_CHARS, BadRow, Reason

BLOCK_BYTES = 8 << 20
_CONVERSION = re.compile(r"In CSV column #(\d+): .*CSV conversion error to (\S+?):")


def csv_batches(
    open_stream: Callable,
    delimiter: str,
    text_columns: list[str],
    bad: list[BadRow],
    replace: bool,
    block_bytes: int = BLOCK_BYTES,
    max_record_bytes: int = 64 << 20,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(row number of the batch's first row, batch) of a CSV stream (`open_stream()` opens it,
    again if a column must be re-read as text, or a row is longer than a block: then with
    blocks of max_record_bytes); bad rows in `bad`. A row longer than that raises
    RowTooLong: a CSV row's end cannot be found without parsing its quotes, so the file is
    not read past it."""
    retyped: dict[str, pa.DataType] = {}
    types: dict[str, pa.DataType] = {}
    done = 0  # Arrow's rows read so far: a re-opened stream passes over them
    bad_rows: set[int] = set()  # row numbers of the bad rows met so far
    while True:
        invalid: list = []

        def on_invalid(row, invalid: list = invalid) -> str:
            invalid.append(row)
            return "skip"

        stream = open_stream()
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(block_size=block_bytes, use_threads=False),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={**{c: pa.string() for c in text_columns}, **{c: pa.string() for c in retyped}},
                    strings_can_be_null=True,
                    check_utf8=False,
                ),
            )
        except pa.ArrowInvalid as exc:
            stream.close()
            if "Empty CSV file" in str(exc):
                return
            raise
        skip = done
        next_row = 0

        def take_invalid(invalid: list = invalid) -> None:
            for row in invalid:
                number = row.number - 2  # Arrow counts the header as row 1
                if number not in bad_rows:  # (a re-opened stream meets the same rows again)
                    bad_rows.add(number)
                    bad.append(BadRow(number, f"row {number + 1}", _field_count(row), row.text[:PREVIEW_CHARS]))
            invalid.clear()

        try:
            for rb in reader:
                take_invalid()
                positions, next_row = _positions(next_row, rb.num_rows, bad_rows)
                if skip:  # a re-opened stream: these rows were read before
                    take = min(skip, rb.num_rows)
                    skip -= take
                    rb, positions = rb.slice(take), positions[take:]
                    if rb.num_rows == 0:
                        continue
                if not types:
                    types = {f.name: f.type for f in rb.schema}
                done += rb.num_rows  # Arrow's rows passed: what a re-opened stream skips
                rb, positions = _retype(rb, positions, retyped, bad)
                rb, positions = _utf8(rb, positions, bad, replace)
                rb, positions = _swallowed(rb, positions, bad, delimiter)
                if rb.num_rows == 0:
                    continue
                if positions[-1] - positions[0] + 1 != len(positions):
                    rb = rb.append_column(ROW_COLUMN, pa.array(positions, pa.int64()))
                yield int(positions[0]), rb
            take_invalid()  # bad rows after the last good one
            return
        except pa.ArrowInvalid as exc:
            if "straddling object" in str(exc):
                if block_bytes > max_record_bytes:
                    raise RowTooLong(
                        f"a row after row {done} is longer than source.max_record_bytes="
                        f"{max_record_bytes:,}: raise it to read this file"
                    ) from None
                block_bytes = max_record_bytes + 1  # read again in blocks that hold the longest row allowed
                continue
            m = _CONVERSION.search(str(exc))
            name = reader.schema.names[int(m.group(1))] if m and int(m.group(1)) < len(reader.schema) else None
            if name is None or name in retyped or name not in types:
                raise
            retyped[name] = types[name]  # read it as text from the start; convert batch by batch
        finally:
            stream.close()


def _field_count(row) -> Reason:
    return Reason("wrong field count", f"{row.actual_columns} fields where the header has {row.expected_columns}")


def _positions(start: int, n: int, bad_rows: set[int]) -> tuple[np.ndarray, int]:
    """Row numbers of the next `n` good rows from `start`, passing over the bad ones."""
    later = sorted(b for b in bad_rows if b >= start)
    if not later or later[0] >= start + n:
        return np.arange(start, start + n, dtype=np.int64), start + n
    cand = np.arange(start, start + n + len(later), dtype=np.int64)
    cand = cand[~np.isin(cand, np.array(later, dtype=np.int64))][:n]
    return cand, int(cand[-1]) + 1


def _row_text(rb: pa.RecordBatch, i: int) -> str:
    """Row `i` as delimited text, for its quarantine row (text read as bytes: it may not decode)."""
    values = []
    for col in rb.columns:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = col.view(pa.binary())
        v = col[i].as_py()
        values.append("" if v is None else v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
    return ",".join(values)[:PREVIEW_CHARS]


def _retype(rb: pa.RecordBatch, positions: np.ndarray, retyped: dict, bad: list[BadRow]):
    """Columns re-read as text back to the type the first block gave them; a value that does
    not convert is its row's BadRow."""
    for name, want in retyped.items():
        i = rb.schema.get_field_index(name)
        col = rb.column(i)
        try:
            rb = rb.set_column(i, name, pc.cast(col, want))
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        ok = np.ones(rb.num_rows, dtype=bool)
        for j, v in enumerate(col.to_pylist()):
            if v is None:
                continue
            try:
                pc.cast(pa.array([v.strip() if isinstance(v, str) else v]), want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                ok[j] = False
                bad.append(
                    BadRow(
                        int(positions[j]),
                        f"row {int(positions[j]) + 1}",
                        Reason(
                            "a value that does not convert",
                            f"column {name!r} holds {v[:100]!r}, not {want} like the rows before it",
                        ),
                        _row_text(rb, j),
                    )
                )
        keep = pa.array(ok)
        rb, positions = rb.filter(keep), positions[ok]
        rb = rb.set_column(i, name, pc.cast(pc.utf8_trim_whitespace(rb.column(i)), want))
    return rb, positions


def _swallowed(rb: pa.RecordBatch, positions: np.ndarray, bad: list[BadRow], delimiter: str):
    """Rows where a quote left open swallowed the lines after it: a field holding lines that
    have a delimiter for every column are rows of their own, not a multi-line message. Only
    values with a newline are looked at (few); such a row is quarantined with what it holds."""
    need = max(1, rb.num_columns - 1)
    ok = None
    for i, f in enumerate(rb.schema):
        if not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)) or f.name == ROW_COLUMN:
            continue
        multi = pc.fill_null(pc.match_substring(rb.column(i), "\n"), False)
        if not pc.any(multi).as_py():
            continue
        for j in np.flatnonzero(multi.to_numpy(zero_copy_only=False)):
            text = rb.column(i)[int(j)].as_py()
            rows = sum(1 for line in text.split("\n")[1:] if line.count(delimiter) >= need)
            if rows:
                ok = np.ones(rb.num_rows, dtype=bool) if ok is None else ok
                ok[j] = False
                bad.append(
                    BadRow(
                        int(positions[j]),
                        f"row {int(positions[j]) + 1}",
                        Reason(
                            "a quote left open",
                            f"column {f.name!r} holds {rows} line(s) that look like "
                            "rows of their own: a quote left open swallowed them; close it and the rows "
                            "load",
                        ),
                        _row_text(rb, int(j)),
                    )
                )
    if ok is None:
        return rb, positions
    return rb.filter(pa.array(ok)), positions[ok]


def _utf8(rb: pa.RecordBatch, positions: np.ndarray, bad: list[BadRow], replace: bool):
    """Text columns checked for UTF-8 at once; a batch that fails, value by value."""
    for i, f in enumerate(rb.schema):
        if not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
            continue
        col = rb.column(i)
        try:
            col.view(pa.binary()).cast(pa.string())
            continue
        except pa.ArrowInvalid:
            pass
        values = col.view(pa.binary()).to_pylist()
        ok = np.ones(rb.num_rows, dtype=bool)
        fixed: list = []
        for j, v in enumerate(values):
            if v is None:
                fixed.append(None)
                continue
            try:
                fixed.append(v.decode("utf-8"))
            except UnicodeDecodeError as exc:
                fixed.append(v.decode("utf-8", "replace"))
                if not replace:
                    ok[j] = False
                    bad.append(
                        BadRow(
                            int(positions[j]),
                            f"row {int(positions[j]) + 1}",
                            Reason(
                                "not valid UTF-8",
                                f"column {f.name!r} is not valid UTF-8 (byte "
                                f"0x{v[exc.start]:02x}); set source.encoding for another encoding, or "
                                "source.encoding_errors: replace",
                            ),
                            _row_text(rb, j),
                        )
                    )
        rb = rb.set_column(i, f.name, pa.array(fixed, f.type))
        if not ok.all():
            rb, positions = rb.filter(pa.array(ok)), positions[ok]
    return rb, positions
