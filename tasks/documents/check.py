"""What is uploaded for one document file, or why it is not: `check(rel, data)` -> Document.

MemOS Cloud's knowledge bases read PDF, DOCX, DOC, TXT, JSON, MD and XML, at most 100 MB and
500 pages a file (/work/shared/memos-api.md "## Documents"). A file is judged by its extension
(case-insensitive); aliases: `.markdown` is md, `.text` is txt, `.htm` and `.html` are HTML.
In that order:

1. 0 bytes -> `empty` (skipped, not quarantined), whatever the type;
2. another extension, or none -> `skip` "unsupported type .png (MemOS reads ...)";
3. more bytes than `Limits.file_bytes` -> `skip` with the size, before anything is parsed;
4. the format behind the extension, read from the bytes already in memory (never twice):
   - pdf: `%PDF-` within the first 1024 bytes (the tolerance Acrobat documents for a header
     after a BOM, whitespace or a mail/MacBinary prefix), then opened with pypdf to count the
     pages (a file pypdf cannot open, or a password-protected one, is skipped with pypdf's
     message, never a traceback); more than `Limits.pages` -> skip;
   - docx: a zip holding `word/document.xml`; pages from Word's `<Pages>` in
     `docProps/app.xml` when present (the count Word saved: other writers leave it out or
     stale, and laying a DOCX out to count its pages is a word processor's job, so without it
     the pages are not checked);
   - doc: the OLE header `D0 CF 11 E0 A1 B1 1A E1` (pages not checked: the binary format keeps
     no count that every writer updates);
   - text (txt, md, json, xml, html): decoded with `encoding` (a UTF-8 BOM is stripped; a
     UTF-16 or UTF-32 BOM switches to that codec; an XML declaration's encoding wins over
     `encoding`, as in every XML parser); bytes that do not decode -> skip with the byte
     offset; only whitespace -> `empty`; a NUL character -> skip (binary data, or UTF-16 without
     a BOM); uploaded as UTF-8 (the very bytes of the file when it already is UTF-8 without a
     BOM). JSON must parse (orjson: RFC 8259, nesting up to 1024 levels); XML must be
     well-formed (expat, with entity declarations refused: a billion-laughs file or an
     external-entity reader costs one skip, not memory or a read of a local file; a DOCTYPE
     without entities is fine), and an XML declaration naming another encoding is rewritten
     to UTF-8 so the uploaded bytes say what they are;
   - html: converted to Markdown (`<stem>.md`, text/markdown), script, style, noscript and
     template dropped; one that converts to nothing -> `empty`.

HTML to Markdown: markdownify (MIT, on BeautifulSoup, MIT; pure Python, maintained, the
converter MarkItDown and LangChain use). html2text is GPL; html-to-markdown (MIT) is a Rust
extension with a larger surface than one conversion per file needs. HTML is parsed with the
standard library's html.parser (no lxml needed in the product).
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from dataclasses import dataclass
from typing import Literal
from xml.parsers import expat

import orjson
from bs4 import BeautifulSoup
from markdownify import MarkdownConverter
from pypdf import PdfReader

from tasks.extract.streams import MEMBER_SEP, ZIP

#: the types MemOS reads, in the order its docs list them (reasons list them so)
MEMOS_TYPES = ("pdf", "docx", "doc", "txt", "json", "md", "xml")
#: other extensions that name one of those (or html, converted to md)
ALIASES = {"markdown": "md", "text": "txt", "htm": "html"}
MEDIA_TYPES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "doc": "application/msword",
    "txt": "text/plain",
    "json": "application/json",
    "md": "text/markdown",
    "xml": "application/xml",
    "html": "text/markdown",  # uploaded converted
}
TEXT_TYPES = frozenset({"txt", "md", "json", "xml", "html"})
OLE_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
PDF_HEADER_WITHIN = 1024  # bytes: where a reader finds %PDF- (PDF Reference 1.7, implementation note 13)
APP_XML_MAX = 1 << 20  # docProps/app.xml read for its page count only up to this size
JSON_DEPTH = 1024  # levels of nesting orjson reads (its documented limit)
REASON_MAX = 240  # characters of a library's message kept in a reason

# the first bytes of what is often given a document's name, to say what a file really is
_LOOKS_LIKE = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a zip file"),
    (OLE_HEADER, "an OLE file (DOC, XLS, PPT, or a password-protected DOCX)"),
    (b"%PDF-", "a PDF"),
    (b"{\\rtf", "an RTF file"),
    (b"\x1f\x8b", "a gzip file"),
)
_BOMS = (  # longest first: the UTF-32 LE BOM starts like UTF-16 LE's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_XML_DECL = re.compile(r"""^(\s*<\?xml\s[^>]*?\bencoding\s*=\s*)(["'])([A-Za-z][A-Za-z0-9._-]*)\2""")
_XML_DECL_BYTES = re.compile(rb"""^\s*<\?xml\s[^>]*?\bencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")
_DROPPED_HTML = ["script", "style", "noscript", "template"]


@dataclass(frozen=True)
class Limits:
    file_bytes: int = 100 * 2**20  # MemOS: 100 MB a file
    pages: int = 500  # MemOS: 500 pages a file
    # the types MemOS reads, by extension (html is read, converted, when md is)
    types: frozenset[str] = frozenset(MEMOS_TYPES)


@dataclass(frozen=True)
class Document:
    outcome: Literal["upload", "empty", "skip"]  # empty: skipped, not quarantined; skip: quarantined with reason
    name: str  # the name to upload under (the file's base name; an HTML file becomes <stem>.md)
    data: bytes  # the bytes to upload (converted HTML as UTF-8 Markdown; re-encoded text as UTF-8)
    media_type: str  # for the data URL (application/pdf, text/markdown, ...)
    reason: str | None  # why skipped: one short clear line; None when uploaded or empty


class _Skip(Exception):
    """A reason to skip the file, raised by a format's check."""


class _Refused(Exception):
    """An XML construct refused before expat acts on it (entities: bombs, external reads)."""


DEFAULT_LIMITS = Limits()


def check(rel: str, data: bytes, limits: Limits = DEFAULT_LIMITS, encoding: str = "utf-8") -> Document:
    """What to upload for the file at `rel` (a path under the source, `a.zip!member` for a zip's
    member) holding `data`. `encoding` is a codec name Python knows: an unknown one raises
    LookupError (a config error: check it with `codecs.lookup` before a run)."""
    codecs.lookup(encoding)
    base = base_name(rel)
    stem, ext = _split(base)
    kind = ALIASES.get(ext, ext)
    name = f"{stem}.{_upload_ext(kind)}" if kind in MEDIA_TYPES else base
    media_type = MEDIA_TYPES.get(kind, "application/octet-stream")

    def skip(reason: str) -> Document:
        return Document("skip", name, b"", media_type, reason)

    if not data:
        return Document("empty", name, b"", media_type, None)
    readable = [t for t in MEMOS_TYPES if t in limits.types] + sorted(limits.types - set(MEMOS_TYPES))
    if kind not in limits.types and not (kind == "html" and "md" in limits.types):
        what = f" .{ext}" if ext else ": no extension"
        also = ", and html converted to Markdown" if "md" in limits.types else ""
        return skip(f"unsupported type{what} (MemOS reads {', '.join(readable)}{also})")
    if len(data) > limits.file_bytes:
        return skip(f"{len(data):,} bytes, more than {_size(limits.file_bytes)}")
    try:
        if kind == "pdf":
            _check_pdf(data, limits)
        elif kind == "docx":
            _check_docx(data, limits)
        elif kind == "doc":
            _check_doc(data)
        else:
            out = _text(kind, data, encoding)
            if out is None:
                return Document("empty", name, b"", media_type, None)
            if len(out) > limits.file_bytes:
                return skip(f"{len(out):,} bytes as UTF-8, more than {_size(limits.file_bytes)}")
            data = out
    except _Skip as e:
        return skip(str(e))
    return Document("upload", name, data, media_type, None)


def base_name(rel: str) -> str:
    """The file's own name: the last part of its path, or of its member path in a zip."""
    lower = rel.lower()
    at = lower.rfind(ZIP + MEMBER_SEP)
    inner = rel[at + len(ZIP) + len(MEMBER_SEP) :] if at >= 0 else rel
    return inner.replace("\\", "/").rsplit("/", 1)[-1]


def _split(base: str) -> tuple[str, str]:
    """`Report.PDF` -> (`Report`, `pdf`); a name without a dot (or only a leading one) has no extension."""
    stem, dot, ext = base.rpartition(".")
    return (stem, ext.lower()) if dot and stem else (base, "")


def _upload_ext(kind: str) -> str:
    """The extension a file is uploaded under: MemOS judges the type by the name, so aliases and
    capitals become the extension it lists (`.markdown`, `.MD` -> `.md`; html -> `.md`)."""
    return "md" if kind == "html" else kind


def _size(n: int) -> str:
    return f"{n // 2**20:,} MB" if n % 2**20 == 0 else f"{n:,} bytes"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 3] + "..."


def _looks_like(data: bytes) -> str:
    """What the first bytes say the file is, as a reason's tail ("; it starts like a PNG image")."""
    what = next((w for magic, w in _LOOKS_LIKE if data.startswith(magic)), None)
    return f"; it starts like {what}" if what else ""


# --- binary formats ----------------------------------------------------------------------------


def _check_pdf(data: bytes, limits: Limits) -> None:
    if data.find(b"%PDF-", 0, PDF_HEADER_WITHIN) < 0:
        raise _Skip(f"not a PDF (no %PDF- header{_looks_like(data)})")
    try:
        reader = PdfReader(io.BytesIO(data))  # BytesIO over bytes shares them: no copy
        if reader.is_encrypted and not reader.decrypt(""):
            # an owner password alone (printing, copying) opens with the empty user password
            raise _Skip("the PDF is password-protected (it opens only with a password)")
        pages = len(reader.pages)
    except _Skip:
        raise
    except Exception as e:  # pypdf raises many kinds on a broken file
        raise _Skip(f"cannot read the PDF: {_one_line(e)}") from None
    if pages == 0:
        raise _Skip("the PDF has no pages")
    if pages > limits.pages:
        raise _Skip(f"{pages:,} pages, more than {limits.pages:,}")


def _check_docx(data: bytes, limits: Limits) -> None:
    if data.startswith(OLE_HEADER):
        raise _Skip(f"not a DOCX (not a zip file{_looks_like(data)})")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise _Skip(f"not a DOCX (not a zip file: {_one_line(e)}{_looks_like(data)})") from None
    with zf:
        names = set(zf.namelist())
        if "word/document.xml" not in names:
            raise _Skip("not a DOCX (a zip without word/document.xml)")
        pages = _docx_pages(zf) if "docProps/app.xml" in names else None
    # without Word's count the pages are not checked (see the module's docstring)
    if pages is not None and pages > limits.pages:
        raise _Skip(f"{pages:,} pages (as Word counted them), more than {limits.pages:,}")


def _docx_pages(zf: zipfile.ZipFile) -> int | None:
    """`<Pages>` of docProps/app.xml, or None when absent, oversized or unreadable."""
    try:
        info = zf.getinfo("docProps/app.xml")
        if info.file_size > APP_XML_MAX:
            return None
        raw = zf.read(info)
    except Exception:  # a broken member: the count is unknown, the upload is judged by MemOS
        return None
    found: list[str] = []
    depth = 0
    in_pages = False

    def start(tag: str, _attrs: object) -> None:
        nonlocal depth, in_pages
        depth += 1
        in_pages = depth == 2 and tag.rsplit(" ", 1)[-1] == "Pages"

    def end(_tag: str) -> None:
        nonlocal depth, in_pages
        depth -= 1
        in_pages = False

    def chars(text: str) -> None:
        if in_pages:
            found.append(text)

    try:
        _safe_parse(raw, start=start, end=end, chars=chars)
    except (expat.ExpatError, _Refused):
        return None
    text = "".join(found).strip()
    return int(text) if text.isdigit() else None


def _check_doc(data: bytes) -> None:
    if not data.startswith(OLE_HEADER):
        raise _Skip(f"not a DOC (no OLE header D0 CF 11 E0 A1 B1 1A E1{_looks_like(data)})")


# --- text formats ------------------------------------------------------------------------------


def _text(kind: str, data: bytes, encoding: str) -> bytes | None:
    """The UTF-8 bytes to upload for a text file, None when it holds only whitespace (or HTML
    that converts to nothing); raises _Skip with why not."""
    codec, start, why = encoding, 0, "set source.encoding"
    for bom, bom_codec in _BOMS:
        if data.startswith(bom):
            codec, start, why = bom_codec, len(bom), f"it starts with a {_label(bom_codec)} byte-order mark"
            break
    else:
        if kind == "xml" and (declared_at := _XML_DECL_BYTES.match(data[:512])):
            declared = declared_at.group(1).decode("ascii")
            try:
                codecs.lookup(declared)
            except LookupError:
                raise _Skip(f"unknown encoding {declared!r} in the XML declaration") from None
            codec, why = declared, "as its XML declaration says"
    try:
        text = str(memoryview(data)[start:], codec)
    except UnicodeDecodeError as e:
        raise _Skip(f"not {_label(codec)} at byte {start + e.start:,} ({why})") from None
    if not text or text.isspace():  # isspace: no copy of a large text, unlike strip()
        return None
    nul = text.find("\x00")
    if nul >= 0:
        raise _Skip(f"binary data, not text (a NUL character at character {nul:,}; UTF-16 without a BOM?)")
    rewritten = kind == "html"
    if kind == "html":
        text = _html_to_markdown(text)
        if not text.strip():
            return None
    elif kind == "xml":
        _check_xml(text)
        decl = _XML_DECL.match(text)
        if decl and (utf8 := _utf8_declaration(decl)) != decl.group(0):
            text, rewritten = utf8 + text[decl.end() :], True
    if start == 0 and codecs.lookup(codec).name == "utf-8" and not rewritten:
        out = data  # already what is uploaded: the very bytes of the file
    else:
        try:
            out = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _Skip(f"not text: a lone surrogate at character {e.start:,}") from None
    if kind == "json":
        try:
            orjson.loads(out)
        except orjson.JSONDecodeError as e:
            at = f"at line {e.lineno} column {e.colno}"
            if e.msg == "depth limit exceeded":  # orjson reads 1024 levels; MemOS's own Python parser fewer
                raise _Skip(f"JSON nested more than {JSON_DEPTH:,} levels deep ({at})") from None
            raise _Skip(f"not JSON: {e.msg} {at}") from None
    return out


def _utf8_declaration(m: re.Match[str]) -> str:
    """An XML declaration's encoding, as UTF-8 (the declaration as it is when it says so)."""
    try:
        if codecs.lookup(m.group(3)).name == "utf-8":
            return m.group(0)
    except LookupError:
        pass
    return f"{m.group(1)}{m.group(2)}UTF-8{m.group(2)}"


def _label(codec: str) -> str:
    name = codecs.lookup(codec).name
    return name.upper() if name.startswith("utf") else name


def _check_xml(text: str) -> None:
    try:
        _safe_parse(text)
    except expat.ExpatError as e:
        message = expat.errors.messages[e.code]
        raise _Skip(f"not well-formed XML: {message} at line {e.lineno} column {e.offset + 1}") from None
    except _Refused as e:
        raise _Skip(f"XML refused: {e}") from None


def _safe_parse(xml: str | bytes, start=None, end=None, chars=None) -> None:
    """Parse with expat, no tree built; entity declarations stop it before expat expands or
    fetches anything (what defusedxml's defaults refuse), parameter entities are never read."""

    def refuse_entity(name: str, *_args: object) -> None:
        raise _Refused(f"it declares the entity {name!r} (entities are refused: an XML bomb or an external read)")

    def refuse_external(_context: object, _base: object, system_id: object, _public_id: object) -> int:
        raise _Refused(f"it refers to an external entity {system_id!r}")

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_external
    if start:
        parser.StartElementHandler = start
    if end:
        parser.EndElementHandler = end
    if chars:
        parser.CharacterDataHandler = chars
    parser.Parse(xml, True)


def _html_to_markdown(html: str) -> str:
    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(_DROPPED_HTML):
        tag.decompose()
    md = MarkdownConverter(heading_style="ATX", bullets="-").convert_soup(soup)
    md = re.sub(r"\n{3,}", "\n\n", md).strip()
    return md + "\n" if md else ""
