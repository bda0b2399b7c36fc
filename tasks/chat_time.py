"""Parse source times into tz-aware UTC timestamps, vectorised over a whole array.

Formats are tried in order per value; a value no format parses becomes null (validation then
quarantines its row, quoting the raw value). Times without an offset are wall-clock times in
the mapping's `time.timezone`; they are placed on the instant with `assume_timezone`, so a
day-light saving gap or overlap resolves to the first valid instant (overlap: the earlier one;
gap: its end) instead of failing the batch.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# ISO 8601 date, optional time, optional fraction, optional offset ("Z", "+02:00", "+0200", "UTC")
_ISO = (
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:[T ](?P<hm>\d{2}:\d{2})(?P<sec>:\d{2})?"
    r"(?:[.,](?P<frac>\d{1,9}))?)?\s*(?P<tz>Z|z|UTC|[+-]\d{2}:?\d{2})?$"
)
_US = pa.timestamp("us", tz="UTC")


def parse_times(values: pa.Array, formats: list[str], timezone: str) -> pa.Array:
    """Return timestamp[us, UTC]; null where no format parses the value."""
    if pa.types.is_timestamp(values.type):
        if values.type.tz is None:
            values = pc.assume_timezone(values, timezone, ambiguous="earliest", nonexistent="latest")
        return values.cast(_US)
    if pa.types.is_date(values.type):
        return parse_times(values.cast(pa.timestamp("us")), formats, timezone)
    numeric = pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
    text = values if pa.types.is_string(values.type) or pa.types.is_large_string(values.type) else None
    if text is None and not numeric:
        text = values.cast(pa.string())
    if text is not None:
        text = pc.utf8_trim_whitespace(text)
    out = pa.nulls(len(values), _US)
    for fmt in formats:
        if fmt in ("epoch_s", "epoch_ms", "epoch_us"):
            parsed = _epoch(values if numeric else text, fmt)
        elif text is None:
            continue
        elif fmt == "iso":
            parsed = _iso(text, timezone)
        else:
            naive = pc.strptime(text, format=fmt, unit="us", error_is_null=True)
            if fmt.startswith("%Y-%m-%d"):
                naive = _reject_rollover(naive, pc.utf8_slice_codeunits(text, 0, 10))
            if "%z" in fmt:
                parsed = naive.cast(_US) if naive.type.tz else pc.assume_timezone(naive, "UTC").cast(_US)
            else:
                parsed = pc.assume_timezone(naive, timezone, ambiguous="earliest", nonexistent="latest").cast(_US)
        out = pc.coalesce(out, parsed)
    return out


def _epoch(values: pa.Array, fmt: str) -> pa.Array:
    scale = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}[fmt]
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        ok = pc.match_substring_regex(values, r"^-?\d+(\.\d+)?$")
        values = pc.if_else(ok, values, pa.scalar(None, values.type)).cast(pa.float64())
    micros = pc.multiply(values.cast(pa.float64()), float(scale))
    # years 1900..2200 only: a seconds column read as milliseconds is an error, not 1970
    sane = pc.and_(pc.greater(micros, -2.2e15), pc.less(micros, 7.3e15))
    micros = pc.if_else(sane, micros, pa.scalar(None, pa.float64()))
    return pc.round(micros).cast(pa.int64()).cast(_US)


def _iso(text: pa.Array, timezone: str) -> pa.Array:
    parts = pc.extract_regex(text, _ISO)
    date, hm, sec, frac, tz = (pc.struct_field(parts, n) for n in ("date", "hm", "sec", "frac", "tz"))
    hm = pc.if_else(pc.equal(pc.utf8_length(hm), 0), "00:00", hm)
    sec = pc.if_else(pc.equal(pc.utf8_length(sec), 0), ":00", sec)
    wall = pc.strptime(
        pc.binary_join_element_wise(date, " ", hm, sec, ""), format="%Y-%m-%d %H:%M:%S", unit="us", error_is_null=True
    )
    wall = _reject_rollover(wall, date)
    frac_us = pc.utf8_slice_codeunits(pc.binary_join_element_wise(frac, "000000", ""), 0, 6).cast(pa.int64())
    wall_us = pc.add(wall.cast(pa.int64()), frac_us)
    # offset in microseconds east of UTC, null when the value has none
    has_tz = pc.greater(pc.utf8_length(tz), 0)
    digits = pc.replace_substring(tz, ":", "")
    sign = pc.if_else(pc.starts_with(digits, "-"), -1, 1)
    hours = pc.if_else(
        pc.match_substring_regex(digits, r"^[+-]\d{4}$"), pc.utf8_slice_codeunits(digits, 1, 3), "00"
    ).cast(pa.int64())
    minutes = pc.if_else(
        pc.match_substring_regex(digits, r"^[+-]\d{4}$"), pc.utf8_slice_codeunits(digits, 3, 5), "00"
    ).cast(pa.int64())
    offset_us = pc.multiply(pc.multiply(sign, pc.add(pc.multiply(hours, 60), minutes)), 60_000_000)
    with_offset = pc.subtract(wall_us, offset_us).cast(_US)
    local = pc.assume_timezone(
        wall_us.cast(pa.timestamp("us")), timezone, ambiguous="earliest", nonexistent="latest"
    ).cast(_US)
    return pc.if_else(has_tz, with_offset, local)


def _reject_rollover(parsed: pa.Array, date_text: pa.Array) -> pa.Array:
    """Null where the parser rolled an impossible date over (2024-02-30 -> 2024-03-01)."""
    fmt = "%Y-%m-%d"
    same = pc.equal(pc.strftime(parsed.cast(pa.timestamp("us")), format=fmt), date_text)
    return pc.if_else(pc.fill_null(same, False), parsed, pa.scalar(None, parsed.type))
