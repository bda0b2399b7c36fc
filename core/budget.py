"""Request budget arithmetic: how many tokens a message is estimated to cost.

MemOS limits are in model tokens, which we cannot count without its tokenizer. We estimate
from UTF-8 bytes: one token per 3 bytes is an over-estimate for English (about 4 characters a
token) and right for CJK (3 bytes a character, about a token each), so a request packed to
the estimated budget stays under the real one. Each message also pays a fixed framing cost.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 8  # role, chat_time and JSON framing of one message


def estimate_tokens(content: pa.Array, load=None) -> np.ndarray:
    """Estimated tokens per message (content plus framing), as int64. `load` (LoadConfig)
    may tune the estimate (bytes_per_token, message_overhead_tokens) to a known tokenizer."""
    per = getattr(load, "bytes_per_token", BYTES_PER_TOKEN)
    extra = getattr(load, "message_overhead_tokens", MESSAGE_OVERHEAD_TOKENS)
    nbytes = pc.fill_null(pc.binary_length(content), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.ceil(nbytes / per).astype(np.int64) + extra


def request_overhead_tokens(load=None) -> int:
    """Fixed cost of one request besides its messages (ids, info, tags)."""
    return int(getattr(load, "request_overhead_tokens", 200))
