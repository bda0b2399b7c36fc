"""tasks/documents/check.py: what is uploaded for one document file, or why not, on real files
(fpdf2's PDFs, python-docx's DOCX) and ugly ones (truncated, renamed, wrong encoding, bombs)."""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from fpdf import FPDF
from fpdf.enums import EncryptionMethod
from pypdf import PdfWriter

from tasks.documents.check import OLE_HEADER, Document, Limits, base_name, check
from tests.documents_fixtures import DOCX_TEXT, PDF_PAGES, docx_bytes, make_folder, pdf_bytes, png_bytes

READS = "(MemOS reads pdf, docx, doc, txt, json, md, xml, and html converted to Markdown)"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.fixture(scope="module")
def pdf2() -> bytes:
    return pdf_bytes(PDF_PAGES)


@pytest.fixture(scope="module")
def docx_file() -> bytes:
    return docx_bytes(DOCX_TEXT)


def skipped(doc: Document) -> str:
    assert doc.outcome == "skip", doc
    assert doc.data == b"" and doc.reason and "\n" not in doc.reason, doc
    return doc.reason


def uploaded(doc: Document) -> bytes:
    assert doc.outcome == "upload" and doc.reason is None, doc
    return doc.data


# --- type, name, empty, size ---------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["photo.png", "a/b/Photo.PNG", "x.zip!img/photo.png"])
def test_unsupported_type_is_skipped_with_what_memos_reads(rel):
    assert skipped(check(rel, png_bytes())) == f"unsupported type .png {READS}"


@pytest.mark.parametrize("rel", ["README", "dir/.env"])
def test_a_name_without_extension_is_unsupported(rel):
    assert skipped(check(rel, b"text")) == f"unsupported type: no extension {READS}"


def test_types_follow_the_limits():
    limits = Limits(types=frozenset({"pdf", "txt"}))
    assert skipped(check("a.doc", OLE_HEADER + b"x", limits)) == "unsupported type .doc (MemOS reads pdf, txt)"
    assert skipped(check("a.html", b"<p>x</p>", limits)).startswith("unsupported type .html")
    assert uploaded(check("a.txt", b"x", limits)) == b"x"


@pytest.mark.parametrize(
    ("rel", "name", "media_type"),
    [
        ("Notes.MARKDOWN", "Notes.md", "text/markdown"),
        ("notes.Md", "notes.md", "text/markdown"),
        ("a/plain.text", "plain.txt", "text/plain"),
        ("READ.TXT", "READ.txt", "text/plain"),
        ("x.json", "x.json", "application/json"),
        ("x.xml", "x.xml", "application/xml"),
        ("docs.zip!deep/dir/guide.md", "guide.md", "text/markdown"),
        ("Docs.ZIP!top.txt", "top.txt", "text/plain"),
        ("odd/Wow!.md", "Wow!.md", "text/markdown"),
        ("my.notes.v2.md", "my.notes.v2.md", "text/markdown"),
    ],
)
def test_names_and_aliases(rel, name, media_type):
    doc = check(rel, b'{"a": 1}' if rel.endswith("json") else b"<a>x</a>")
    assert (doc.outcome, doc.name, doc.media_type) == ("upload", name, media_type)


def test_base_name():
    assert base_name("a/b/c.pdf") == "c.pdf"
    assert base_name("exports/2024.zip!handbook/intro.md") == "intro.md"
    assert base_name("c.pdf") == "c.pdf"


@pytest.mark.parametrize("rel", ["e.pdf", "e.docx", "e.doc", "e.txt", "e.md", "e.json", "e.xml", "e.png", "e"])
def test_zero_bytes_is_empty_whatever_the_type(rel):
    doc = check(rel, b"")
    assert (doc.outcome, doc.data, doc.reason) == ("empty", b"", None)


@pytest.mark.parametrize("rel", ["w.txt", "w.md", "w.json", "w.xml", "w.html"])
def test_whitespace_only_text_is_empty(rel):
    assert check(rel, b" \n\t\r\n  ").outcome == "empty"
    assert check(rel, codecs.BOM_UTF8 + b"\n\n").outcome == "empty"


def test_over_the_size_limit_is_skipped_before_parsing():
    limits = Limits(file_bytes=1000)
    # garbage that would fail every format check: the size is what is reported
    for rel in ("big.pdf", "big.docx", "big.doc", "big.txt", "big.json", "big.xml", "big.html"):
        assert skipped(check(rel, b"\xff" * 1001, limits)) == "1,001 bytes, more than 1,000 bytes"
    assert uploaded(check("ok.txt", b"a" * 1000, limits)) == b"a" * 1000
    assert skipped(check("b.txt", b"a" * (100 * 2**20 + 1))) == "104,857,601 bytes, more than 100 MB"


def test_text_that_grows_past_the_limit_as_utf8_is_skipped():
    data = "é".encode("cp1252") * 600  # 600 bytes in cp1252, 1,200 as UTF-8
    reason = skipped(check("g.txt", data, Limits(file_bytes=1000), encoding="cp1252"))
    assert reason == "1,200 bytes as UTF-8, more than 1,000 bytes"


def test_an_unknown_encoding_is_a_config_error():
    with pytest.raises(LookupError):
        check("a.txt", b"x", encoding="no-such-codec")


# --- PDF -----------------------------------------------------------------------------------------


def test_pdf_made_by_fpdf2_is_uploaded_as_it_is(pdf2):
    doc = check("docs/handbook.pdf", pdf2)
    assert uploaded(doc) is pdf2
    assert (doc.name, doc.media_type) == ("handbook.pdf", "application/pdf")


def test_pdf_pages_against_the_limit():
    three = pdf_bytes(["one", "two", "three"])
    assert uploaded(check("p.pdf", three, Limits(pages=3))) == three
    assert skipped(check("p.pdf", three, Limits(pages=2))) == "3 pages, more than 2"


def test_a_501_page_pdf_is_skipped():
    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for i in range(501):
        pdf.add_page()
        pdf.cell(text=f"page {i + 1}")
    assert skipped(check("long.pdf", bytes(pdf.output()))) == "501 pages, more than 500"


@pytest.mark.parametrize("keep", [100, 0.3, 0.5, 0.8, -10])
def test_a_truncated_pdf_cannot_be_read(pdf2, keep):
    cut = pdf2[: int(len(pdf2) * keep) if isinstance(keep, float) else keep]
    assert skipped(check("cut.pdf", cut)).startswith("cannot read the PDF: ")


def test_a_png_renamed_pdf():
    assert skipped(check("photo.pdf", png_bytes())) == "not a PDF (no %PDF- header; it starts like a PNG image)"


def test_text_named_pdf():
    assert skipped(check("a.pdf", b"hello")) == "not a PDF (no %PDF- header)"


def test_a_pdf_header_after_a_bom_and_whitespace_is_read(pdf2):
    data = codecs.BOM_UTF8 + b" \r\n" + pdf2
    assert uploaded(check("bom.pdf", data)) == data


def test_a_pdf_with_no_pages_is_skipped():
    out = io.BytesIO()
    PdfWriter().write(out)
    assert skipped(check("none.pdf", out.getvalue())) == "the PDF has no pages"


def test_password_protected_pdf_is_skipped_and_owner_only_is_uploaded():
    def encrypted(**kw) -> bytes:
        pdf = FPDF()
        pdf.set_font("helvetica")
        pdf.add_page()
        pdf.cell(text="secret")
        pdf.set_encryption(owner_password="owner", encryption_method=EncryptionMethod.RC4, **kw)
        return bytes(pdf.output())

    assert skipped(check("e.pdf", encrypted(user_password="user"))).startswith("the PDF is password-protected")
    assert uploaded(check("o.pdf", encrypted())).startswith(b"%PDF-")


def test_pdf_garbage_after_the_header_is_a_skip_not_a_traceback():
    for data in (b"%PDF-1.7\n" + bytes(range(256)) * 40, b"%PDF-1.4\n%%EOF\n", b"%PDF-"):
        assert skipped(check("junk.pdf", data)).startswith("cannot read the PDF: ")


# --- DOCX, DOC -----------------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def _with_app_xml(docx: bytes, app_xml: bytes | None) -> bytes:
    with zipfile.ZipFile(io.BytesIO(docx)) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n != "docProps/app.xml"}
    if app_xml is not None:
        members["docProps/app.xml"] = app_xml
    return _zip(members)


def _app_xml(pages: str) -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties" '
        b'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">'
        b"<Template>Normal.dotm</Template><Pages>" + pages.encode() + b"</Pages><Words>9</Words></Properties>"
    )


def test_docx_made_by_python_docx_is_uploaded_as_it_is(docx_file):
    doc = check("policy.docx", docx_file)
    assert uploaded(doc) is docx_file
    assert (doc.name, doc.media_type) == ("policy.docx", DOCX_TYPE)


def test_docx_pages_from_words_app_xml(docx_file):
    assert skipped(check("long.docx", _with_app_xml(docx_file, _app_xml("600")))) == (
        "600 pages (as Word counted them), more than 500"
    )
    assert check("ok.docx", _with_app_xml(docx_file, _app_xml("500"))).outcome == "upload"
    # no count, or one that cannot be read: the pages are not checked
    for app in (None, b"<Properties><Pages>many</Pages></Properties>", b"<broken", _app_xml("")):
        assert check("n.docx", _with_app_xml(docx_file, app)).outcome == "upload"


def test_docx_app_xml_with_entities_is_not_expanded(docx_file):
    bomb = b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "1">]><Properties><Pages>&a;</Pages></Properties>'
    assert check("b.docx", _with_app_xml(docx_file, bomb)).outcome == "upload"  # count unknown, not read


def test_a_zip_without_word_document_renamed_docx():
    data = _zip({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"})
    assert skipped(check("sheet.docx", data)) == "not a DOCX (a zip without word/document.xml)"


def test_random_bytes_and_ole_named_docx():
    assert skipped(check("r.docx", bytes(range(256)) * 4)).startswith("not a DOCX (not a zip file: ")
    assert skipped(check("old.docx", OLE_HEADER + b"\x00" * 600)).startswith(
        "not a DOCX (not a zip file; it starts like an OLE file"
    )


def test_truncated_docx_is_skipped(docx_file):
    assert skipped(check("cut.docx", docx_file[: len(docx_file) // 2])).startswith("not a DOCX")


def test_doc_needs_the_ole_header(docx_file):
    data = OLE_HEADER + bytes(range(256)) * 2
    doc = check("old.doc", data)
    assert uploaded(doc) is data and doc.media_type == "application/msword"
    assert skipped(check("r.doc", bytes(reversed(range(256))) * 3)) == (
        "not a DOC (no OLE header D0 CF 11 E0 A1 B1 1A E1)"
    )
    assert skipped(check("new.doc", docx_file)).endswith("; it starts like a zip file)")


# --- text ----------------------------------------------------------------------------------------


def test_utf8_text_is_uploaded_as_its_own_bytes():
    data = "Grüße, 世界\n".encode()
    for rel in ("a.txt", "a.md"):
        assert uploaded(check(rel, data)) is data


def test_a_utf8_bom_is_stripped():
    assert uploaded(check("b.md", codecs.BOM_UTF8 + b"# hi\n")) == b"# hi\n"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_bom_become_utf8(codec):
    text = "Grüße, 世界 😀\n"
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(codec, b"")
    data = bom + text.encode(codec)  # "utf-16"/"utf-32" write their own BOM
    assert uploaded(check("u.txt", data)) == text.encode("utf-8")


def test_cp1252_text_with_the_default_encoding_is_skipped_at_its_byte():
    data = "Le café\n".encode("cp1252")
    assert skipped(check("c.txt", data)) == "not UTF-8 at byte 6 (set source.encoding)"


def test_cp1252_text_with_its_encoding_is_uploaded_as_utf8():
    data = "Le café – 5 €\n".encode("cp1252")
    assert uploaded(check("c.txt", data, encoding="cp1252")) == "Le café – 5 €\n".encode()


def test_bad_utf8_after_a_bom_counts_the_bom_in_the_offset():
    assert skipped(check("b.txt", codecs.BOM_UTF8 + b"ab\xff")) == (
        "not UTF-8 at byte 5 (it starts with a UTF-8 byte-order mark)"
    )


def test_odd_utf16_is_skipped():
    reason = skipped(check("o.txt", codecs.BOM_UTF16_LE + "ab".encode("utf-16-le") + b"\x00"))
    assert reason.startswith("not UTF-16-LE at byte ")


def test_nul_characters_are_binary_not_text():
    assert skipped(check("u16.txt", "hello".encode("utf-16-le"))).startswith("binary data, not text")
    assert skipped(check("png.txt", png_bytes(), encoding="latin-1")).startswith("binary data, not text")


def test_png_renamed_txt_with_utf8():
    assert skipped(check("png.txt", png_bytes())) == "not UTF-8 at byte 0 (set source.encoding)"


# --- JSON ----------------------------------------------------------------------------------------


def test_json_that_parses_is_uploaded_as_it_is():
    data = json.dumps({"a": {"b": {"c": [1, 2, 3]}}}).encode()  # 3 deep
    assert uploaded(check("d.json", data)) is data


def test_json_nested_5000_deep_is_skipped():
    data = b"[" * 5000 + b"]" * 5000
    assert skipped(check("deep.json", data)) == "JSON nested more than 1,024 levels deep (at line 1 column 1026)"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"hello", "not JSON: unexpected character, expected a JSON value at line 1 column 1"),
        (b'{"a": 1,}', "not JSON: trailing comma is not allowed at line 1 column 8"),
        (b'{"a": 1}\n{"b": 2}\n', "not JSON: unexpected content after document at line 2 column 1"),
        (b'{"a": [1, 2', "not JSON: unexpected end of data at line 1 column 12"),
    ],
)
def test_json_that_does_not_parse_is_skipped_with_the_parsers_message(data, reason):
    assert skipped(check("bad.json", data)) == reason


def test_json_in_utf16_becomes_utf8_json():
    data = codecs.BOM_UTF16_LE + '{"name": "café"}'.encode("utf-16-le")
    assert json.loads(uploaded(check("u.json", data))) == {"name": "café"}


# --- XML -----------------------------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'.encode() for i in range(1, 10)
    )
    + b"]>\n<lolz>&lol9;</lolz>\n"
)


def test_well_formed_xml_is_uploaded_as_it_is():
    data = b'<?xml version="1.0" encoding="utf-8"?>\n<root><item id="1">caf\xc3\xa9</item></root>\n'
    assert uploaded(check("a.xml", data)) is data


def test_malformed_xml_is_skipped_with_where():
    assert skipped(check("bad.xml", b"<a>\n<b></a>")) == "not well-formed XML: mismatched tag at line 2 column 6"
    assert skipped(check("two.xml", b"<a/><b/>")).startswith("not well-formed XML: junk after document element")


def test_billion_laughs_costs_one_skip():
    started = time.perf_counter()
    reason = skipped(check("lol.xml", BILLION_LAUGHS))
    assert time.perf_counter() - started < 1
    assert reason == "XML refused: it declares the entity 'lol' (entities are refused: an XML bomb or an external read)"


def test_external_entities_are_refused():
    data = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    assert skipped(check("xxe.xml", data)).startswith("XML refused: it declares the entity 'x'")
    data = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]><r/>'
    assert skipped(check("xxe2.xml", data)).startswith("XML refused: it declares the entity 'p'")


def test_a_doctype_without_entities_is_fine():
    data = (
        b'<?xml version="1.0"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
        b'"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n<html><body>hi</body></html>'
    )
    assert uploaded(check("x.xml", data)) is data


def test_an_xml_declaration_naming_another_encoding_is_read_by_it_and_rewritten():
    data = '<?xml version="1.0" encoding="ISO-8859-1"?>\n<a>café</a>\n'.encode("latin-1")
    out = uploaded(check("l.xml", data))
    assert out == b'<?xml version="1.0" encoding="UTF-8"?>\n<a>caf\xc3\xa9</a>\n'
    assert ET.fromstring(out).text == "café"


def test_utf16_xml_is_uploaded_as_utf8_with_its_declaration_saying_so():
    text = "<?xml version='1.0' encoding='UTF-16'?>\n<a>Grüße</a>\n"
    out = uploaded(check("u.xml", text.encode("utf-16")))
    assert out == "<?xml version='1.0' encoding='UTF-8'?>\n<a>Grüße</a>\n".encode()
    assert ET.fromstring(out).text == "Grüße"


def test_xml_declaring_an_encoding_its_bytes_are_not():
    data = '<?xml version="1.0" encoding="UTF-8"?><a>café</a>'.encode("latin-1")
    assert skipped(check("x.xml", data)) == "not UTF-8 at byte 44 (as its XML declaration says)"
    data = b'<?xml version="1.0" encoding="klingon"?><a/>'
    assert skipped(check("k.xml", data)) == "unknown encoding 'klingon' in the XML declaration"


# --- HTML ----------------------------------------------------------------------------------------

PAGE = b"""<!DOCTYPE html><html><head><title>Staff portal</title>
<style>.banner { color: fuchsia }</style><script>var apiKey = "hunter2";</script></head>
<body><h1>Holiday rules</h1><p>Request leave <b>two weeks</b> ahead.</p>
<ul><li>Summer</li><li>Winter</li></ul><noscript>Enable JavaScript</noscript>
<script type="module">import("tracker")</script></body></html>"""


def test_html_becomes_markdown_without_script_or_style():
    doc = check("site/Portal.HTML", PAGE)
    text = uploaded(doc).decode("utf-8")
    assert (doc.name, doc.media_type) == ("Portal.md", "text/markdown")
    assert "# Holiday rules" in text and "**two weeks**" in text and "- Summer" in text
    for hidden in ("apiKey", "hunter2", "fuchsia", "tracker", "Enable JavaScript"):
        assert hidden not in text


@pytest.mark.parametrize("rel", ["x.htm", "x.html"])
def test_an_html_page_that_is_only_a_script_is_empty(rel):
    doc = check(rel, b"<html><head><script>document.write('hi')</script><style>p{}</style></head><body></body></html>")
    assert (doc.outcome, doc.name, doc.data) == ("empty", "x.md", b"")


def test_html_in_cp1252():
    doc = check("c.html", "<p>Café crème</p>".encode("cp1252"), encoding="cp1252")
    assert uploaded(doc) == "Café crème\n".encode()
    assert skipped(check("c.html", "<p>Café</p>".encode("cp1252"))) == "not UTF-8 at byte 6 (set source.encoding)"


# --- the fixtures' folder ------------------------------------------------------------------------


def test_the_fixture_folder_agrees_with_check(tmp_path: Path):
    expected = make_folder(tmp_path)
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert on_disk == set(expected)
    for rel, want in expected.items():
        doc = check(rel, (tmp_path / rel).read_bytes())
        assert (doc.outcome, doc.name, doc.media_type) == (want["outcome"], want["name"], want["media_type"]), rel
        if want["outcome"] == "upload":
            assert hashlib.sha256(doc.data).hexdigest() == want["sha256"] and len(doc.data) == want["size"], rel
        if want["reason_contains"]:
            assert want["reason_contains"] in (doc.reason or ""), (rel, doc.reason)
    assert {rel for rel, want in expected.items() if want["outcome"] == "upload"} == {
        "handbook.pdf",
        "policy.docx",
        "notes.md",
        "readme.txt",
        "data.json",
        "page.html",
        "sub/inner.md",
    }
