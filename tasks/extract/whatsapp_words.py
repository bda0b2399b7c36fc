"""What WhatsApp itself writes into an exported chat, in the language of the phone that exported it.

`classify(body, words, sender)` sorts one message body into a kind (message, system, call,
deleted, media) and gives the text to keep; `detect(bodies)` names the language of a chat from
its first bodies; `AM`/`PM` are every language's 12-hour markers for the header parser. The
wordings themselves live in `whatsapp_lexicon` with their sources (docs/whatsapp-languages.md).

Speed: most bodies are plain text, so a body is first looked up whole in one dict (deleted and
media placeholders, notices without a name), then checked by cheap `startswith`/`endswith`
tests, and a notice's regex only runs when the body holds one of the literal words that notice
must contain (a set look-up over its tokens).

A notice written by an iPhone *with* a sender in front is recognised by the body's shape. Short
notices made of a name and a verb ("Ann left", "Ann added Bob") could be ordinary sentences, so
with a sender they count only when the name is the sender's or the language's "You".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tasks.extract.whatsapp_lexicon import LEXICON

KINDS = ("message", "system", "call", "deleted", "media")
NOTICE_MAX = 600  # characters: longer bodies are never notices (a subject is at most 100)
WEAK = 12  # a notice whose literal words are shorter than this needs its name to be the sender's
QUOTES = "\"“”„«»'‘’"
_SLOT = re.compile(r"\{([ANQ])\}")
_MARKER_DROP = str.maketrans("", "", ". \u202f\u00a0\u200e\u200f")

Result = tuple[str, str, str | None]


@dataclass(frozen=True)
class Words:
    """One language's wordings (see `whatsapp_lexicon` for their meaning and sources)."""

    code: str
    name: str
    you: tuple[str, ...] = ()
    am: tuple[str, ...] = ()
    pm: tuple[str, ...] = ()
    encryption: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()
    calls: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    media: tuple[str, ...] = ()
    omitted: tuple[tuple[str, str], ...] = ()  # (placeholder, kind), kind one of lexicon.OMITTED_KINDS
    attached: tuple[str, ...] = ()  # the word in iOS's "<attached: NAME>"
    file_attached: tuple[str, ...] = ()  # the words in Android's "NAME (file attached)"
    edited: tuple[str, ...] = ()


def normalise_marker(s: str) -> str:
    """A 12-hour marker as `AM`/`PM` hold it: lower case, no dots, spaces or direction marks."""
    return s.translate(_MARKER_DROP).lower()


def _words(code: str, raw: dict) -> Words:
    return Words(
        code=code,
        name=raw["name"],
        you=tuple(raw.get("you", ())),
        am=tuple(raw.get("am", ())),
        pm=tuple(raw.get("pm", ())),
        encryption=tuple(raw.get("encryption", ())),
        notices=tuple(raw.get("notices", ())),
        calls=tuple(raw.get("calls", ())),
        deleted=tuple(raw.get("deleted", ())),
        media=tuple(raw.get("media", ())),
        omitted=tuple(raw.get("omitted", {}).items()),
        attached=tuple(raw.get("attached", ())),
        file_attached=tuple(raw.get("file_attached", ())),
        edited=tuple(raw.get("edited", ())),
    )


LANGUAGES: dict[str, Words] = {code: _words(code, raw) for code, raw in LEXICON.items()}
AM: frozenset[str] = frozenset(normalise_marker(m) for w in LANGUAGES.values() for m in w.am)
PM: frozenset[str] = frozenset(normalise_marker(m) for w in LANGUAGES.values() for m in w.pm)


@dataclass(frozen=True)
class _Template:
    regex: re.Pattern[str]
    kind: str
    weak: bool  # short: with a sender, its name must be the sender's or "You"
    says_you: bool  # its literal words include the language's "You" (it is about the reader)


class _Compiled:
    """One language's wordings, compiled for `classify`."""

    def __init__(self, w: Words) -> None:
        self.words = w
        exact: dict[str, Result] = {"null": ("media", "[media omitted]", None)}  # Android's view-once body
        for d in w.deleted:
            for form in (d, d.rstrip(".") + "."):  # the iPhone writes the final period
                exact[form] = ("deleted", form, None)
        for m in w.media:
            exact[m] = ("media", "[media omitted]", None)
        for phrase, kind in w.omitted:
            exact[phrase] = ("media", f"[{kind} omitted]", None)
        self.media_exact = dict(exact)  # the placeholders a caption may follow on further lines
        self.doc_suffixes = tuple(" " + p for p, kind in w.omitted if kind == "document")
        self.prefixes = tuple(w.encryption)
        self.edited = tuple(sorted({f for e in w.edited for f in (" " + e, e)}, key=len, reverse=True))
        self.attached = (
            re.compile(r"<\s?(?:" + "|".join(map(re.escape, w.attached)) + r"):\s?(?P<f>[^<>]+?)\s?>")
            if w.attached
            else None
        )
        self.file_attached = (
            re.compile(r"(?P<f>\S.*?) \((?:" + "|".join(map(re.escape, w.file_attached)) + r")\)")
            if w.file_attached
            else None
        )
        you = {y.casefold() for y in w.you}
        self.you = frozenset(w.you)
        self.by_token: dict[str, list[_Template]] = {}
        for kind, templates in (("system", w.notices), ("call", w.calls)):
            for t in templates:
                if not _SLOT.search(t):
                    exact.setdefault(t, (kind, t, None))
                    continue
                literal = _SLOT.sub(" ", t)
                tokens = [tok for tok in t.split() if "{" not in tok]
                if not tokens:
                    continue
                template = _Template(
                    regex=re.compile(_pattern(t)),
                    kind=kind,
                    weak="{Q}" not in t and len(literal.replace(" ", "")) < WEAK,
                    says_you=any(tok.strip(".,").casefold() in you for tok in literal.split()),
                )
                self.by_token.setdefault(max(tokens, key=len), []).append(template)
        self.exact = exact
        self.keys = frozenset(self.by_token)

    def media(self, line: str) -> Result | None:
        """The media placeholder or attachment `line` is, if it is one."""
        hit = self.media_exact.get(line)
        if hit is not None:
            return hit
        last = line[-1:]
        if last == ">" and self.attached is not None:
            m = self.attached.fullmatch(line)
            if m:
                return ("media", f"[file: {m['f']}]", m["f"])
        elif last == ")" and self.file_attached is not None:
            m = self.file_attached.fullmatch(line)
            if m:
                return ("media", f"[file: {m['f']}]", m["f"])
        if self.doc_suffixes and line.endswith(self.doc_suffixes):  # "report.pdf • 2 pages document omitted"
            return ("media", "[document omitted]", None)
        return None

    def notice(self, text: str, sender: str | None) -> str | None:
        """The kind (system or call) of the notice `text` is, if it is one."""
        tokens = text.split()
        if self.keys.isdisjoint(tokens):
            return None
        for tok in tokens:
            for t in self.by_token.get(tok, ()):
                m = t.regex.fullmatch(text)
                if m is None:
                    continue
                if sender is not None and t.weak and not t.says_you:
                    actor = m.groupdict().get("A")
                    if actor is not None and actor != sender and actor not in self.you:
                        continue
                return t.kind
        return None


def _pattern(template: str) -> str:
    out, pos, named = [], 0, False
    for m in _SLOT.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        slot = m[1]
        if slot == "Q":
            out.append(f"[{QUOTES}].*[{QUOTES}]")
        elif slot == "A" and not named:
            out.append("(?P<A>.+?)")
            named = True
        else:
            out.append(".+?")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return "".join(out)


_COMPILED: dict[str, _Compiled] = {}


def _compiled(words: Words) -> _Compiled:
    c = _COMPILED.get(words.code)
    if c is None or c.words is not words:
        c = _COMPILED[words.code] = _Compiled(words)
    return c


def classify(body: str, words: Words, sender: str | None, marked: bool = False) -> Result:
    """(kind, text, file name or None) of one message body (its lines joined by \\n, U+200E/U+200F
    already removed; `sender` None for a header with no `Name: `). The edited marker is cut from
    the end; a media placeholder becomes "[image omitted]" / "[media omitted]" / "[file: NAME]"
    (in English whatever the language; a caption on the lines after it is kept); a notice is
    system, a call log call, a deleted placeholder deleted; anything else a message. `marked`:
    the body came after the sender with a direction mark in front, as the iPhone writes its
    notices ("Team: \u200eAnn added Bo"): a short notice then counts whoever it names."""
    c = _compiled(words)
    text = body
    if text.endswith(">") and c.edited:
        for e in c.edited:
            if text.endswith(e):
                text = text[: -len(e)]
                break
    hit = c.exact.get(text)
    if hit is not None:
        return hit
    first, nl, rest = text.partition("\n")
    media = c.media(first)
    if media is not None:
        kind, shown, name = media
        return (kind, f"{shown}\n{rest}" if nl else shown, name)
    if c.prefixes and text.startswith(c.prefixes):
        return ("system", text, None)
    if not nl and len(text) <= NOTICE_MAX:
        notice = c.notice(text, None if marked else sender)
        if notice is not None:
            return (notice, text, None)
    return ("message", text, None)


def detect(bodies: Iterable[tuple[str | None, str]], limit: int = 2000) -> str | None:
    """The language code of a chat from its first `limit` bodies (sender, body): the language whose
    notices and placeholders match most of them; None when nothing tells (the caller uses English).
    A body every language reads alike (a file attached by name, `null`) tells nothing."""
    scores = dict.fromkeys(LANGUAGES, 0)
    for n, (sender, body) in enumerate(bodies):
        if n >= limit:
            break
        hits = [code for code, w in LANGUAGES.items() if classify(body, w, sender)[0] != "message"]
        if len(hits) < len(LANGUAGES):
            for code in hits:
                scores[code] += 1
    best = max(scores, key=lambda code: scores[code])  # ties: the first listed (English first)
    return best if scores[best] else None
