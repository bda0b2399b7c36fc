"""A folder of real documents for the documents source's tests (issue 40), and what the runner
must do with each file.

`make_folder(root)` writes a PDF made by fpdf2, a DOCX made by python-docx, Markdown, text,
JSON, HTML with a script, a Markdown file in a subfolder, an empty file, a PNG (an unsupported
type) and a cp1252 text file (not UTF-8), and returns per relative path:

    {"outcome": "upload" | "empty" | "skip",
     "name": the name it is uploaded under,
     "media_type": the data URL's media type,
     "sha256": of the bytes to upload (None when not uploaded),
     "size": their length (None when not uploaded),
     "reason_contains": a piece of the skip reason (None unless skipped)}

HTML entries also carry "contains" (the page's words, each in the converted text) and
"excludes" (the script's and style's words, none in it).

The expectations are computed here, apart from tasks/documents/check.py: files uploaded as they
are hash their own bytes as written; the cp1252 file's byte offset is found in its own bytes.
The one exception is page.html: its upload is the Markdown a converter makes, which nothing but
the converter can predict byte for byte, so its sha256 and size come from check(); what makes it
right is checked here apart from it (the page's words are in it, the script's are not).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import docx
from fpdf import FPDF

from tasks.documents.check import check

PDF_PAGES = [
    "Onboarding handbook. Every new colleague receives a laptop on the first morning.",
    "Travel policy. Trains are booked in second class; flights over six hours in premium economy.",
]
DOCX_TEXT = ["Security policy", "Passwords are rotated every ninety days.", "Report lost badges at once."]
NOTES_MD = "# Release notes\n\n- Version 2 adds knowledge bases.\n- The quarterly review moves to Thursday.\n"
README_TXT = "Read me first.\nThe archive room opens at nine.\n"
DATA_JSON = {"products": [{"id": 1, "name": "Lantern", "tags": ["outdoor", "light"]}], "currency": "EUR"}
HTML_WORDS = ["Cafeteria", "menu", "lentil", "soup", "Friday"]
HTML_HIDDEN = ["trackVisitor", "secretToken", "fuchsia"]
PAGE_HTML = (
    "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Cafeteria</title>\n"
    "<style>body { color: fuchsia; }</style>\n"
    "<script>function trackVisitor() { return 'secretToken'; }</script>\n</head>\n"
    "<body><h1>Cafeteria menu</h1>\n<p>The <b>lentil soup</b> is served on Friday.</p>\n"
    "<script>trackVisitor();</script></body></html>\n"
)
INNER_MD = "# Inner page\n\nThis file lives in a subfolder.\n"
LATIN1_TEXT = "Le café ouvre à huit heures.\n"  # "café" in cp1252: é is 0xE9, not UTF-8


def png_bytes() -> bytes:
    """A real 1x1 PNG (signature, IHDR, IDAT, IEND with their CRCs)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    idat = zlib.compress(b"\x00\xff\x80\x00")  # filter byte, one orange pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def pdf_bytes(pages: list[str]) -> bytes:
    """A PDF written by fpdf2, one page per text."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(w=0, text=text)
    return bytes(pdf.output())


def docx_bytes(paragraphs: list[str]) -> bytes:
    """A DOCX written by python-docx: a heading, then paragraphs."""
    doc = docx.Document()
    doc.add_heading(paragraphs[0], level=1)
    for text in paragraphs[1:]:
        doc.add_paragraph(text)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def _as_is(name: str, data: bytes, media_type: str) -> dict:
    """An upload of the file's own bytes."""
    return {
        "outcome": "upload",
        "name": name,
        "media_type": media_type,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "reason_contains": None,
    }


def _not_sent(outcome: str, name: str, media_type: str, reason: str | None) -> dict:
    return {
        "outcome": outcome,
        "name": name,
        "media_type": media_type,
        "sha256": None,
        "size": None,
        "reason_contains": reason,
    }


def make_folder(root: Path) -> dict[str, dict]:
    """Write the documents under `root`; return what the runner must do, per relative path."""
    files: dict[str, bytes] = {
        "handbook.pdf": pdf_bytes(PDF_PAGES),
        "policy.docx": docx_bytes(DOCX_TEXT),
        "notes.md": NOTES_MD.encode(),
        "readme.txt": README_TXT.encode(),
        "data.json": json.dumps(DATA_JSON, indent=2).encode(),
        "page.html": PAGE_HTML.encode(),
        "sub/inner.md": INNER_MD.encode(),
        "empty.txt": b"",
        "photo.png": png_bytes(),
        "latin1.txt": LATIN1_TEXT.encode("cp1252"),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    first_non_ascii = next(i for i, b in enumerate(files["latin1.txt"]) if b >= 0x80)
    expected = {
        "handbook.pdf": _as_is("handbook.pdf", files["handbook.pdf"], "application/pdf"),
        "policy.docx": _as_is(
            "policy.docx",
            files["policy.docx"],
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        "notes.md": _as_is("notes.md", files["notes.md"], "text/markdown"),
        "readme.txt": _as_is("readme.txt", files["readme.txt"], "text/plain"),
        "data.json": _as_is("data.json", files["data.json"], "application/json"),
        "page.html": _html_expectation(files["page.html"]),
        "sub/inner.md": _as_is("inner.md", files["sub/inner.md"], "text/markdown"),
        "empty.txt": _not_sent("empty", "empty.txt", "text/plain", None),
        "photo.png": _not_sent("skip", "photo.png", "application/octet-stream", "unsupported type .png"),
        "latin1.txt": _not_sent("skip", "latin1.txt", "text/plain", f"not UTF-8 at byte {first_non_ascii}"),
    }
    return expected


def _html_expectation(data: bytes) -> dict:
    """page.html uploads as page.md: the converted bytes come from check() (see the docstring),
    checked here for the page's words and against the script's and style's."""
    doc = check("page.html", data)
    assert doc.outcome == "upload", doc
    text = doc.data.decode("utf-8")
    missing = [w for w in HTML_WORDS if w not in text]
    leaked = [w for w in HTML_HIDDEN if w in text]
    assert not missing and not leaked, (missing, leaked, text)
    return {
        "outcome": "upload",
        "name": "page.md",
        "media_type": "text/markdown",
        "sha256": hashlib.sha256(doc.data).hexdigest(),
        "size": len(doc.data),
        "reason_contains": None,
        "contains": HTML_WORDS,
        "excludes": HTML_HIDDEN,
    }
