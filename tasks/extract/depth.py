"""A nesting guard for JSON documents read as a stream: a subtree nested deeper than
MAX_DEPTH is replaced, bytes on the fly, by one marker string, so the parser never sees it.

Without it a few hundred KB of `[[[[...` make the streaming parser build gigabytes (the
nested lists, and a path string per level as long as the nesting: quadratic) and the run is
killed for memory. With it the record holding the subtree carries TOO_DEEP, and the reader
quarantines that record alone; the rest of the document is read as usual.

Checked a chunk at a time: numpy finds the quotes that open or close strings (a quote after
an even run of backslashes) and the brackets outside strings; a chunk that cannot reach the
limit passes through as it is (every ordinary document). Only a chunk that does is walked
byte by byte to cut the subtree out.
"""

from __future__ import annotations

import numpy as np

MAX_DEPTH = 200  # levels of nesting in a document; orjson writes up to 254 again
TOO_DEEP = "\x00memos-etl: nested too deep"  # what a cut subtree becomes (a JSON string)
_MARK = b'"\\u0000memos-etl: nested too deep"'
MARK_TEXT = _MARK[1:-1].decode()  # how a record holding a cut subtree reads as JSON text
BLOCK = 1 << 20  # bytes checked at a time
_QUOTE, _BACKSLASH = 34, 92
_OPEN, _CLOSE = (91, 123), (93, 125)


class DepthGuard:
    """A binary stream over `raw` with subtrees deeper than `limit` cut out."""

    def __init__(self, raw, limit: int = MAX_DEPTH):
        self.raw, self.limit = raw, limit
        self.depth = 0
        self.in_string = False
        self.backslashes = 0  # the run of backslashes ending the previous chunk (inside a string)
        self.cut_at: int | None = None  # cutting: the depth the cut subtree started at
        self.cuts = 0
        self.buf, self.pos, self.eof = b"", 0, False

    def read(self, n: int = -1) -> bytes:
        """Up to `n` checked bytes (all of them for -1); b"" only at the end."""
        while (n is None or n < 0 or len(self.buf) - self.pos < n) and not self.eof:
            chunk = self.raw.read(BLOCK)  # checked a block at a time, handed out as asked
            if not chunk:
                self.eof = True
                break
            out = chunk if self.cut_at is None and self._fast(chunk) else self._slow(chunk)
            self.buf = self.buf[self.pos :] + out if self.pos < len(self.buf) else out
            self.pos = 0
        end = len(self.buf) if n is None or n < 0 else min(len(self.buf), self.pos + n)
        piece = self.buf[self.pos : end]
        self.pos = end
        return piece

    def _fast(self, chunk: bytes) -> bool:
        """Update the state for `chunk` and say True when it cannot pass the limit. Works on
        the positions of quotes and brackets, not on every byte."""
        a = np.frombuffer(chunk, dtype=np.uint8)
        qpos = np.flatnonzero(a == _QUOTE)
        if len(qpos):
            # a quote after a backslash may be escaped: count the run (rare, in Python)
            maybe = qpos[(qpos > 0) & (a[qpos - 1] == _BACKSLASH)] if len(qpos) else qpos
            escaped = []
            for q in maybe.tolist():
                i = q - 1
                while i >= 0 and chunk[i] == _BACKSLASH:
                    i -= 1
                run = q - 1 - i + (self.backslashes if i < 0 else 0)
                if run % 2:
                    escaped.append(q)
            if qpos[0] == 0 and self.backslashes % 2:
                escaped.append(0)
            if escaped:
                qpos = np.setdiff1d(qpos, np.array(escaped, dtype=qpos.dtype), assume_unique=True)
        brackets = np.flatnonzero((a == _OPEN[0]) | (a == _OPEN[1]) | (a == _CLOSE[0]) | (a == _CLOSE[1]))
        carry = 1 if self.in_string else 0
        if len(brackets):
            inside = (np.searchsorted(qpos, brackets) + carry) % 2 == 1
            b = brackets[~inside]
            kind = a[b]
            step = np.where((kind == _OPEN[0]) | (kind == _OPEN[1]), 1, -1)
            curve = self.depth + np.cumsum(step)
            if len(curve) and int(curve.max()) > self.limit:
                return False
            if len(curve):
                self.depth = int(curve[-1])
        self.in_string = bool((len(qpos) + carry) % 2)
        tail = len(chunk) - len(chunk.rstrip(b"\\"))
        self.backslashes = tail + (self.backslashes if tail == len(chunk) else 0)
        return True

    def _slow(self, chunk: bytes) -> bytes:
        out = bytearray()
        depth, in_string, bs, cut_at = self.depth, self.in_string, self.backslashes, self.cut_at
        for b in chunk:
            if in_string:
                if b == _BACKSLASH:
                    bs += 1
                else:
                    if b == _QUOTE and bs % 2 == 0:
                        in_string = False
                    bs = 0
                if cut_at is None:
                    out.append(b)
                continue
            if b == _QUOTE:
                in_string, bs = True, 0
            elif b in _OPEN:
                depth += 1
                if cut_at is None and depth > self.limit:
                    cut_at = depth - 1
                    out += _MARK
                    self.cuts += 1
                    continue
            elif b in _CLOSE:
                depth -= 1
                if cut_at is not None and depth == cut_at:
                    cut_at = None
                    continue
            if cut_at is None:
                out.append(b)
        self.depth, self.in_string, self.backslashes, self.cut_at = depth, in_string, bs, cut_at
        return bytes(out)
