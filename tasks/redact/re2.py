"""Presidio's Python regular expressions translated into RE2 supersets (Arrow's regex kernels),
the redaction pre-filter's expressions: `loosen` drops lookarounds and word boundaries, widens
back-references and spells out Python's Unicode classes, so the RE2 expression matches every
text the original could; `phone_prefilter` asks for a run of digits as long as the shortest
valid number of the regions. A pure translation: no Presidio import."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

_WORD = r"\p{L}\p{N}\p{M}\p{Pc}"
_SPACE = r"\s\p{Z}\x{85}\x{1c}-\x{1f}"
_ANY = r"(?s:.)"
_CLASS_ESC = {"d": r"\p{Nd}", "D": r"\P{Nd}", "w": _WORD, "s": _SPACE, "b": r"\x{8}"}
_ESC = {"d": r"\p{Nd}", "D": r"\P{Nd}", "w": f"[{_WORD}]", "W": f"[^{_WORD}]", "s": f"[{_SPACE}]", "S": f"[^{_SPACE}]"}
_ZERO_WIDTH = set("bBAZzG")


class _Unsupported(Exception):
    pass


def loosen(regex: str) -> str | None:
    """An RE2 expression matching (somewhere) in every text where `regex` (Python `regex`
    syntax, Presidio's flags) matches; None when it cannot be written (verbose mode,
    conditionals). Wider is fine: it only chooses which messages Presidio reads."""
    try:
        body = _loosen(regex)
    except (_Unsupported, IndexError):
        return None
    return "(?ims)" + body


def _escape(rx: str, i: int, in_class: bool) -> tuple[int, str | None]:
    """The escape at rx[i] == '\\' in RE2: (index after it, its text). Inside a class, None
    for an escape no class can hold (\\W, \\S, \\N{...}): the class widens to any character."""
    e = rx[i + 1]
    if e in "uU":  # \uXXXX, \UXXXXXXXX: RE2 spells them \x{...}
        width = 4 if e == "u" else 8
        return i + 2 + width, r"\x{" + rx[i + 2 : i + 2 + width] + "}"
    if e in "pP" and i + 2 < len(rx) and rx[i + 2] == "{":  # properties: kept
        j = rx.index("}", i) + 1
        return j, rx[i:j]
    if e == "N":  # a named character
        return rx.index("}", i) + 1, None if in_class else _ANY
    if in_class:
        if e in _CLASS_ESC:
            return i + 2, _CLASS_ESC[e]
        return i + 2, None if e in "WS" else rx[i : i + 2]
    if e in _ESC:
        return i + 2, _ESC[e]
    if e in _ZERO_WIDTH:
        return i + 2, ""
    if e.isdigit() and e != "0":  # back-reference: whatever the group matched
        j = i + 1
        while j < len(rx) and rx[j].isdigit():
            j += 1
        return j, _ANY + "*"
    if e == "g":  # \g<name>
        return rx.index(">", i) + 1, _ANY + "*"
    if e == "0":
        return i + 2, r"\x{0}"
    return i + 2, rx[i : i + 2]


def _loosen(rx: str) -> str:
    out: list[str] = []
    i, n = 0, len(rx)
    quantified = False  # the last thing written was a quantifier (a '+' after it is possessive)
    while i < n:
        c = rx[i]
        if c == "+" and quantified:
            i += 1
            quantified = False
            continue
        quantified = False
        if c == "\\":
            i, text = _escape(rx, i, in_class=False)
            out.append(text or "")  # outside a class every escape has a text
            continue
        if c == "[":
            j, cls = _class(rx, i)
            out.append(cls)
            i = j
            continue
        if c == "(":
            if rx.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
                i = _group_end(rx, i)  # an assertion: dropped
                continue
            if rx.startswith("(?#", i):
                i = rx.index(")", i) + 1
                continue
            if rx.startswith("(?P=", i):
                i = rx.index(")", i) + 1
                out.append(_ANY + "*")
                continue
            if rx.startswith(("(?>", "(?:"), i):
                out.append("(?:")
                i += 3
                continue
            if rx.startswith("(?P<", i) or (rx.startswith("(?<", i) and rx[i + 3] not in "=!"):
                out.append("(?:")
                i = rx.index(">", i) + 1
                continue
            if rx.startswith("(?", i):  # inline flags: (?i) (?i:...) (?-i:...)
                j = i + 2
                while j < n and rx[j] not in ":)":
                    j += 1
                flags = rx[i + 2 : j]
                if any(f not in "imsu-aL" for f in flags) or not flags:
                    raise _Unsupported(flags)  # verbose mode, conditionals, branch reset
                kept = "".join(f for f in flags if f in "ims-")
                kept = kept.rstrip("-")
                if rx[j] == ")":
                    out.append(f"(?{kept})" if kept.strip("-") else "")
                else:
                    out.append(f"(?{kept}:" if kept.strip("-") else "(?:")
                i = j + 1
                continue
            out.append("(")
            i += 1
            continue
        if c == "{":
            j = rx.find("}", i)
            inner = rx[i + 1 : j] if j > 0 else ""
            counted = j > 0 and (inner.replace(",", "", 1).isdigit() or (inner.startswith(",") and inner[1:].isdigit()))
            if counted:
                out.append("{" + ("0" + inner if inner.startswith(",") else inner) + "}")
                i = j + 1
                quantified = True
                continue
            if j > 0 and any(inner.lstrip().startswith(k) for k in "edis") and "<" in inner:
                raise _Unsupported("fuzzy matching")  # regex's {e<=1}: no RE2 superset written here
            out.append(r"\{")
            i += 1
            continue
        if c in "*+?":
            out.append(c)
            i += 1
            quantified = True
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _class(rx: str, i: int) -> tuple[int, str]:
    """A character class at rx[i] == '[': (index after it, its RE2 form)."""
    j = i + 1
    out = ["["]
    if rx[j] == "^":
        out.append("^")
        j += 1
    first = True
    wide = False  # holds \W or \S: no union of classes says it; any character instead
    while True:
        c = rx[j]
        if c == "]" and not first:
            j += 1
            break
        first = False
        if c == "\\":
            j, text = _escape(rx, j, in_class=True)
            if text is None:
                wide = True
            else:
                out.append(text)
            continue
        if c == "[":
            if rx.startswith("[:", j):
                k = rx.index(":]", j) + 2
                out.append(rx[j:k])
                j = k
                continue
            out.append(r"\[")
            j += 1
            continue
        out.append(c)
        j += 1
    if wide:
        return j, _ANY
    return j, "".join(out) + "]"


def _group_end(rx: str, i: int) -> int:
    """Index after the group opening at rx[i] == '('."""
    depth = 0
    while i < len(rx):
        c = rx[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i, _ = _class(rx, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise _Unsupported("unbalanced group")


def re2_ok(pattern: str) -> bool:
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


def phone_prefilter(regions, leniency: int = 1) -> str:
    """Digits as many as the shortest valid number of `regions` (or, at leniency 0, the
    shortest locally dialable one), at most four other characters apart: python-phonenumbers'
    matcher puts at most four punctuation characters between digit blocks."""
    import phonenumbers

    shortest = 32
    for region in regions:
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if meta is None or meta.general_desc is None:
            return _ANY  # unknown region: no bound
        lengths = list(meta.general_desc.possible_length or ())
        if not leniency:
            lengths += list(meta.general_desc.possible_length_local_only or ())
        shortest = min([shortest, *[n for n in lengths if n > 0]])
    return r"\p{Nd}(?:\P{Nd}{0,4}\p{Nd}){%d}" % (shortest - 1)  # noqa: UP031 (a regex of braces)
