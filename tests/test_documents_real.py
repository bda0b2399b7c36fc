"""Documents into the real open-source MemOS server (issue 40, item 5): a small folder synced
through the CLI into a cube, searched, one file changed and one deleted, synced again, and
what the server then holds, memory by memory, per file_id.

The server, its virtualenv and the skip-or-fail rule (MEMOS_ETL_REQUIRE_MEMOS) are
tests/test_memos_real.py's: its `memos` fixture starts a fresh stack for this module."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import requests
import yaml

from core.client.knowledge_self_hosted import file_id
from tests import test_memos_real as real

pytestmark = pytest.mark.memos_real
memos = real.memos  # the module-scoped fixture: one fresh MemOS stack for this module

FILES = {
    "kettle.md": "# Kettle policy\n\nThe office kettle named Brunhilde is descaled every Thursday with citric acid.\n",
    "bikes.txt": "Bicycle storage: the basement cage code changes every full moon.\n",
    "sub/parking.md": "# Parking\n\nVisitors park on level minus two, bay forty-seven.\n",
}
KETTLE_V2 = "# Kettle policy\n\nThe office kettle named Brunhilde is now descaled every Monday with white vinegar.\n"


def _held(base: str, cube: str) -> dict[str, list[str]]:
    """file_id -> the texts of the cube's memories made from that file (straight from the server)."""
    body = {
        "mem_cube_id": cube,
        "page": 1,
        "page_size": 500,
        "include_preference": False,
        "include_tool_memory": False,
        "include_skill_memory": False,
    }
    r = requests.post(base + "/product/get_memory", json=body, timeout=60)
    r.raise_for_status()
    out: dict[str, list[str]] = {}
    for c in r.json()["data"]["text_mem"]:
        for m in c["memories"]:
            for fid in m["metadata"].get("file_ids") or ["(none)"]:
                out.setdefault(fid, []).append(m["memory"])
    return out


def _sync(path: Path) -> dict:
    out = real._cli("sync", "handbook", "--no-prefect", "--json", config=path)
    return json.loads(out[out.index("{") :])


def test_documents_synced_searched_changed_and_deleted_on_the_real_server(memos, tmp_path):
    cube = f"handbook-{time.time_ns() % 10**8}"
    folder = tmp_path / "docs"
    for rel, text in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    (tmp_path / "m.yaml").write_text(
        yaml.safe_dump(
            {
                "source": {"name": "handbook", "type": "files", "format": "documents", "path": str(folder)},
                "documents": {"knowledgebase": cube, "parse_wait_s": 5},
                "on_delete": "delete",
            }
        )
    )
    path = tmp_path / "memos-etl.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sources": {"handbook": str(tmp_path / "m.yaml")},
                "target": {"kind": "self-hosted", "base_url": memos, "timeout_s": 180},
                "state": {"work_dir": str(tmp_path / "state"), "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            }
        )
    )

    def fid(rel: str, text: str) -> str:
        return file_id(cube, rel, hashlib.sha256(text.encode()).hexdigest())

    # 1. the folder: each file one sync add, parsed before it answered, its memories by its id
    first = _sync(path)
    assert first["status"] == "completed", first
    assert first["counts"]["delivered"] == 3 and first["counts"]["quarantined"] == 0, first
    assert "3 parsed, 0 still parsing, 0 failed to parse" in " ".join(first["notes"]), first["notes"]
    held = _held(memos, cube)
    ids = {rel: fid(rel, text) for rel, text in FILES.items()}
    assert set(held) == set(ids.values()), held
    for rel, text in FILES.items():
        words = text.split("\n")[-2]  # the file's last sentence, as MemOS kept it (Markdown chunked with its title)
        assert any(words in m for m in held[ids[rel]]), (rel, held[ids[rel]])
    print("after sync 1:", {rel: len(held[i]) for rel, i in ids.items()})

    # 2. searched as the documents' user (the cube's own name: its default readable cube)
    found = real._cli("search", cube, "Which day is the kettle descaled?", "--limit", "1", config=path)
    assert "Brunhilde" in found and "Thursday" in found, found

    # 3. a re-sync sends nothing
    again = _sync(path)
    assert again["counts"]["delivered"] == 0 and again["counts"]["requests"] == 0, again
    assert _held(memos, cube) == held

    # 4. kettle.md changed, bikes.txt deleted: the new version added, the old one and the
    # deleted file's memories deleted by file_ids within the cube
    (folder / "kettle.md").write_text(KETTLE_V2)
    (folder / "bikes.txt").unlink()
    third = _sync(path)
    assert third["status"] == "completed", third
    assert third["counts"]["delivered"] == 1 and third["counts"]["gone_from_source"] == 1, third
    after = _held(memos, cube)
    kettle_v2 = fid("kettle.md", KETTLE_V2)
    assert set(after) == {kettle_v2, ids["sub/parking.md"]}, after
    assert any("white vinegar" in m for m in after[kettle_v2]) and not any("Thursday" in m for m in after[kettle_v2])
    assert after[ids["sub/parking.md"]] == held[ids["sub/parking.md"]]  # untouched
    print("after sync 3:", {k: len(v) for k, v in after.items()}, "texts:", after)

    found = real._cli("search", cube, "Which day is the kettle descaled?", "--limit", "3", config=path)
    assert "Monday" in found and "Thursday" not in found and "full moon" not in found, found
