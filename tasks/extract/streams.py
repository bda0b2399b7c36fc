"""Streams: a unit's bytes as the readers want them, whatever the file was downloaded as.

- compressed files (`.gz`, `.bz2`, `.zst`, `.xz`, or `source.compression`) are decompressed as
  a stream: memory is one read block, not the file;
- a `.zip` archive is listed member by member (`zip_members`) and each member is a unit of its
  own, read straight out of the archive (no unpacking to disk; on S3 through ranged reads);
- text (JSONL, CSV, JSON) is handed on as UTF-8: a UTF-8 BOM is dropped, a UTF-16 BOM (or
  `source.encoding`) is transcoded on the fly. Bytes that are not UTF-8 in a UTF-8 source are
  left as they are, for the line and row readers to quarantine the one record they belong to.

Standard library and Arrow only (zipfile, lzma, codecs, Arrow's codecs): nothing here holds
more than a block.
"""

from __future__ import annotations

import codecs
import fnmatch
import zipfile
from typing import BinaryIO, cast

import pyarrow as pa
import pyarrow.fs as pafs

from core.errors import WrongFormat

#: the name's last extension -> codec (Arrow's names; xz goes through Python's lzma)
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".xz": "xz"}
ZIP = ".zip"
#: separates an archive from a member in a unit's name: `export.zip!conversations.json`
MEMBER_SEP = "!"

# the first bytes of formats that are often given the wrong name (to say what a file really is)
_MAGIC = (
    (b"\x1f\x8b", "a gzip file"),
    (b"BZh", "a bzip2 file"),
    (b"\x28\xb5\x2f\xfd", "a zstd file"),
    (b"\xfd7zXZ\x00", "an xz file"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PAR1", "a Parquet file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"%PDF", "a PDF document"),
)


def strip_compression(name: str) -> str:
    """`day.jsonl.gz` -> `day.jsonl`: the name the format is judged by."""
    lower = name.lower()
    for ext in COMPRESSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def compression_of(name: str, setting: str = "auto") -> str | None:
    if setting != "auto":
        return None if setting == "none" else setting
    lower = name.lower()
    return next((codec for ext, codec in COMPRESSIONS.items() if lower.endswith(ext)), None)


def what_it_is(head: bytes) -> str | None:
    """What the first bytes say a file is, when it is a binary format we know."""
    return next((what for magic, what in _MAGIC if head.startswith(magic)), None)


def zip_members(
    fs: pafs.FileSystem, path: str, suffixes: tuple[str, ...], pattern: str | None
) -> list[zipfile.ZipInfo]:
    """The members of an archive to read: those matching `pattern` (a glob on the member's
    path or its base name), else those whose names end with the format's suffixes. Folders,
    macOS resource forks and hidden files are never members."""
    with fs.open_input_file(path) as fh:
        infos = zipfile.ZipFile(fh).infolist()
    out = []
    for info in infos:
        name = info.filename
        base = name.rsplit("/", 1)[-1]
        if info.is_dir() or name.startswith("__MACOSX/") or base.startswith(".") or not base:
            continue
        if pattern is not None:
            if not (fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(base, pattern)):
                continue
        elif not strip_compression(name).lower().endswith(suffixes):
            continue
        out.append(info)
    return out


class _Stream:
    """A read-only stream over `raw` (closed with it; a context manager, as files are)."""

    raw: BinaryIO
    closed = False

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True
        self.raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Utf8(_Stream):
    """A read-only stream of UTF-8 bytes over a stream in another encoding (incremental
    decoding: a character split across reads is kept for the next one)."""

    def __init__(self, raw, encoding: str, head: bytes):
        self.raw = raw
        self.decoder = codecs.getincrementaldecoder(encoding)("replace")
        self.head = head
        self.done = False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:  # all of it, as files do
            parts = []
            while part := self.read(8 << 20):
                parts.append(part)
            return b"".join(parts)
        out = b""
        while not out and not self.done:
            chunk = self.head or self.raw.read(n)
            self.head = b""
            if not chunk:
                self.done = True
                out = self.decoder.decode(b"", final=True).encode("utf-8")
                break
            out = self.decoder.decode(chunk).encode("utf-8")
        return out


class Prefixed(_Stream):
    """A stream with its first bytes put back (decompressed and object-store streams cannot seek)."""

    def __init__(self, head: bytes, raw):
        self.head, self.raw = head, raw

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                out, self.head = self.head, b""
                return out + self.raw.read()
            out, self.head = self.head[:n], self.head[n:]
            return out + self.raw.read(n - len(out)) if len(out) < n else out  # a full read, as asked
        return self.raw.read(n) if n is not None and n >= 0 else self.raw.read()


def _binary(head: bytes) -> bool:
    """Most lines of the first bytes hold NULs: a binary file (or UTF-16 without a BOM), not
    text with one bad line (that line is quarantined on its own)."""
    if b"\x00" not in head:
        return False
    lines = head.split(b"\n")
    return sum(1 for line in lines if b"\x00" in line) * 2 > len(lines)


def open_bytes(fs: pafs.FileSystem, path: str, member: str = "", compression: str | None = None) -> BinaryIO:
    """The unit's raw bytes: an archive member or a file, decompressed."""
    if member:
        archive = fs.open_input_file(path)
        try:
            stream = zipfile.ZipFile(archive).open(member)
        except (zipfile.BadZipFile, KeyError, RuntimeError, NotImplementedError) as exc:
            archive.close()
            raise OSError(f"cannot open member {member!r}: {exc}") from None
    else:
        stream = fs.open_input_stream(path, compression=None)  # (Arrow would guess by extension)
    if compression == "xz":
        import lzma

        return lzma.open(stream)  # type: ignore[return-value]
    if compression:
        return pa.CompressedInputStream(stream, compression)
    return cast(BinaryIO, stream)


def open_text(
    fs: pafs.FileSystem,
    path: str,
    encoding: str,
    member: str = "",
    compression: str | None = None,
    fmt: str | None = "jsonl",
) -> BinaryIO:
    """The unit's text as UTF-8 bytes (see the module docstring). Raises WrongFormat when the
    first bytes are a binary format we know, or hold NUL bytes outside UTF-16."""
    raw = open_bytes(fs, path, member, compression)
    head = b""
    try:
        while len(head) < 4:
            chunk = raw.read(64 << 10)
            if not chunk:
                break
            head += chunk
        kind = what_it_is(head)
        if kind:
            hint = (
                " (name it with its extension, e.g. .gz, or set source.compression)"
                if kind in ("a gzip file", "a bzip2 file", "a zstd file", "an xz file")
                else ""
            )
            raise WrongFormat(f"this is {kind}, not {fmt} text{hint}")
        if head.startswith(codecs.BOM_UTF8):
            head = head[3:]
        elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return cast(BinaryIO, _Utf8(raw, "utf-16", head))  # the BOM says which byte order; the decoder drops it
        elif not encoding.startswith("utf-16") and _binary(head):
            raise WrongFormat(
                f"binary content (NUL bytes in most lines of the first {len(head)} bytes), not {fmt} "
                "text; UTF-16 without a BOM needs source.encoding: utf-16-le (or -be)"
            )
        if encoding not in ("utf-8", "ascii"):
            return cast(BinaryIO, _Utf8(raw, encoding, head))
        return cast(BinaryIO, Prefixed(head, raw))
    except BaseException:
        raw.close()
        raise
