"""Personal data redacted before it leaves: Presidio in the pipeline, against the dev-server
over real HTTP, with every non-loopback connect refused (tests/conftest.py network_guard)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import stat
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from core.config import RedactConfig, load_mapping
from core.errors import ConfigError
from flows.runner import run
from tasks.quarantine import read_quarantine
from tasks.redact import DEFAULT_ENTITIES, Redactor, loosen, re2_ok
from tests.conftest import ROOT
from tests.helpers import chat_rows, sample_mapping_at, stats, without_network, write_jsonl

SECRET = "test-secret-0123456789abcdef"
EMAILS = ["ana.lopez@example.com", "bo.chen@example.org", "carla+news@mail.example.net"]
PHONES = ["+1 415-555-0134", "(212) 555-0188", "+44 20 7946 0958"]
CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004"]  # Luhn-valid
NOT_CARD = "4111 1111 1111 1112"  # Luhn-invalid: not a card, kept
IBANS = ["DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32"]
IPS = ["10.20.30.40", "2001:db8::1"]
TICKETS = ["TCK-123456", "TCK-654321"]
SUPPORT = "support@acme.example"  # allow-listed
PLAIN = [
    "see you at 10:30 tomorrow",
    "I ran 5 km in 27 minutes",
    "the 2024 plan is fine",
    "ok, thanks!",
    "room 101 at 9",
    "wir sehen uns um 18 Uhr",
    "año 1999 — ¿sí?",
]

REDACT = {
    "operators": {"EMAIL_ADDRESS": "hash", "CREDIT_CARD": "mask", "IP_ADDRESS": "drop_message"},
    "allow": [SUPPORT],
    "patterns": [{"entity": "TICKET_ID", "regex": r"\bTCK-\d{6}\b", "score": 0.9}],
}


def token(value: str) -> str:
    return f"<EMAIL_ADDRESS:{hmac.new(SECRET.encode(), value.encode(), hashlib.sha256).hexdigest()[:16]}>"


def message(rng: random.Random) -> tuple[str, str | None]:
    """(source text, what the target must store; None: dropped)."""
    kind = rng.choice(
        ["email", "phone", "card", "not_card", "iban", "ip", "ticket", "support", "mixed", "plain", "plain", "plain"]
    )
    plain = rng.choice(PLAIN)
    if kind == "email":
        v = rng.choice(EMAILS)
        return f"write to {v} please", f"write to {token(v)} please"
    if kind == "phone":
        v = rng.choice(PHONES)
        return f"call me on {v} after work", "call me on <PHONE_NUMBER> after work"
    if kind == "card":
        v = rng.choice(CARDS)
        return f"my card is {v}, thanks", f"my card is {'*' * len(v)}, thanks"
    if kind == "not_card":
        return f"reference {NOT_CARD} for the order", f"reference {NOT_CARD} for the order"
    if kind == "iban":
        v = rng.choice(IBANS)
        return f"IBAN {v} is mine", "IBAN <IBAN_CODE> is mine"
    if kind == "ip":
        return f"the box at {rng.choice(IPS)} is down", None
    if kind == "ticket":
        v = rng.choice(TICKETS)
        return f"see {v} for details", "see <TICKET_ID> for details"
    if kind == "support":
        return f"ask {SUPPORT} anything", f"ask {SUPPORT} anything"
    if kind == "mixed":
        e, t = rng.choice(EMAILS), rng.choice(TICKETS)
        return f"{plain}; {e} filed {t}", f"{plain}; {token(e)} filed <TICKET_ID>"
    return plain, plain


LONG = "x" * 300 + " and my phone is +1 415-555-0199"  # over checks.max_content_chars: quarantined


def source(tmp_path: Path, name: str, seed: int, conversations: int = 30, turns: int = 6):
    rng = random.Random(seed)
    rows = chat_rows(conversations, turns, prefix=name[0], user=f"{name[0]}u")
    expected: dict = defaultdict(list)
    wants = {}
    for r in rows:
        r["text"], want = message(rng)
        wants[r["message_id"]] = want
        if want is not None:
            expected[(r["user"], r["conversation_id"])].append(want)
    bad = dict(rows[0], message_id="bad-1", user=None, text=f"no user here, mail {EMAILS[0]}")
    long = dict(rows[0], message_id="bad-2", text=LONG)
    write_jsonl(tmp_path / name / "chats.jsonl", rows + [bad, long])
    for r in rows:
        r["want"] = wants[r["message_id"]]  # what the target must hold of it (None: dropped)
    m = sample_mapping_at(
        tmp_path, tmp_path / name, name=f"{name}.yaml", redact=REDACT, checks={"max_content_chars": 300}
    )
    body = yaml.safe_load(m.read_text())
    body["source"]["name"] = name
    m.write_text(yaml.safe_dump(body))
    return m, rows, dict(expected)


def stored_contents(url: str) -> dict:
    import requests

    out: dict = defaultdict(list)
    for m in requests.get(url + "/_dev/messages", timeout=30).json():
        out[(m["user_id"], m["conversation_id"])].append(m["content"])
    return dict(out)


SENSITIVE = EMAILS + PHONES + CARDS + IBANS + IPS + TICKETS + ["+1 415-555-0199"]


def test_personal_data_never_reaches_the_target_and_reruns_send_nothing(
    dev_server, run_config, tmp_path, monkeypatch, network_guard
):
    monkeypatch.setenv("MEMOS_ETL_REDACT_SECRET", SECRET)
    run_config.state.data_docs = True  # Great Expectations' pages show failing values: redacted ones
    ma, rows_a, want_a = source(tmp_path, "alpha", seed=1)
    mb, rows_b, want_b = source(tmp_path, "beta", seed=2)
    report = run(load_mapping(ma), run_config)
    c = report.counts
    assert report.status == "completed" and c.accounted
    assert c.quarantined == 2  # the row with no user, the over-long one: quarantined raw
    assert report.data_docs and "<PHONE_NUMBER>" in "".join(
        p.read_text(errors="replace") for p in Path(report.data_docs).parent.rglob("*.html")
    )
    dropped = sum(1 for r in rows_a if any(ip in r["text"] for ip in IPS))
    assert c.redaction_dropped == dropped > 0 and c.redaction["IP_ADDRESS"]["messages"] == dropped
    assert c.delivered == len(rows_a) - dropped
    assert set(report.redacting) == set(DEFAULT_ENTITIES) | {"TICKET_ID"}

    stored = stored_contents(dev_server.url)
    # byte for byte: redacted exactly where an entity was, everything else as the source had it
    assert stored == want_a
    everything = "\n".join(t for texts in stored.values() for t in texts)
    for value in SENSITIVE:
        assert value not in everything, value
    assert SUPPORT in everything and NOT_CARD in everything  # allowed, and not a card
    # (+1: the row quarantined for its missing user is redacted too; validation sees redacted text)
    emails = sum(r["text"].count("@") - r["text"].count(SUPPORT) for r in rows_a) + 1
    assert c.redaction["EMAIL_ADDRESS"]["found"] == emails
    assert c.redaction["TICKET_ID"]["found"] == sum(r["text"].count("TCK-") for r in rows_a)
    assert c.redaction["CREDIT_CARD"]["found"] == sum(any(v in r["text"] for v in CARDS) for r in rows_a)

    # the raw row stays in quarantine (for re-drive), readable by its owner only
    q = read_quarantine(run_config.state.work_dir, "alpha")
    records = "".join(q.column("record").to_pylist())
    assert q.num_rows == 2 and EMAILS[0] in records and "+1 415-555-0199" in records
    qfile = next(Path(run_config.state.work_dir, "quarantine").rglob("*.parquet"))
    assert stat.S_IMODE(qfile.stat().st_mode) == 0o600
    assert stat.S_IMODE(qfile.parent.stat().st_mode) == 0o700
    # nothing the run kept beside it holds a value either (ledger, staging, reports)
    for p in Path(run_config.state.work_dir).rglob("*"):
        if p.is_file() and "quarantine" not in p.parts[-4:-1] and p.suffix != ".parquet":
            data = p.read_bytes()
            assert not any(v.encode() in data for v in SENSITIVE), p

    # a re-run sends nothing: same redaction, same batch keys, everything already delivered
    before = stats(dev_server.url)["add_requests"]
    again = run(load_mapping(ma), run_config)
    assert again.counts.requests == 0 and stats(dev_server.url)["add_requests"] == before

    # another source, another run: equal values give equal tokens (joinable, never reversed)
    other = run(load_mapping(mb), run_config)
    assert other.status == "completed"
    stored = stored_contents(dev_server.url)
    assert {k: v for k, v in stored.items() if k[0].startswith("bu")} == want_b
    tokens = {t for texts in stored.values() for text in texts for t in text.split() if t.startswith("<EMAIL")}
    assert tokens <= {token(e) for e in EMAILS} and len(tokens) == len(EMAILS)
    assert network_guard.attempts == []


def test_flow_report_and_artifacts_count_entities_and_hold_no_value(
    prefect_server, dev_server, run_config, tmp_path, monkeypatch
):
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    from flows.sync import run_sync

    monkeypatch.delenv("MEMOS_ETL_REDACT_SECRET", raising=False)
    Secret(value=SECRET).save("redact-test-secret", overwrite=True)  # the secret from a Prefect block
    m, rows, want = source(tmp_path, "gamma", seed=3, conversations=8)
    body = yaml.safe_load(m.read_text())
    body["redact"]["hash_secret_block"] = "redact-test-secret"
    m.write_text(yaml.safe_dump(body))
    report = run_sync(str(m), run_config)
    assert stored_contents(dev_server.url) == want  # the block's secret gives the same tokens
    assert report["status"] == "completed" and report["counts"]["accounted"]
    assert report["counts"]["redaction"]["EMAIL_ADDRESS"]["found"] >= 1
    with get_client(sync_client=True) as client:
        arts = [a for a in client.read_artifacts() if a.key and a.key.startswith("sync-gamma")]
    md = next(a.data for a in arts if a.key == "sync-gamma")
    assert "## Personal data redacted" in md and "| EMAIL_ADDRESS |" in md and "personal data" in md
    everything = json.dumps([a.data for a in arts], default=str)
    assert not any(v in everything for v in SENSITIVE)


# --- the pre-filter changes nothing Presidio finds ----------------------------------------

PIECES = [
    "hello",
    "the",
    "at",
    "km",
    "tel",
    "call",
    "phone:",
    "+",
    "(",
    ")",
    "-",
    ".",
    "/",
    ":",
    "::",
    "@",
    ",",
    "x",
    "ext.",
    "www.",
    "http://",
    "example.com",
    "mail.example.org",
    "10:30",
    "2024",
    "7",
    "42",
    "555",
    "0134",
    "4111",
    "1111",
    "DE89",
    "3704",
    "0044",
    "0532",
    "0130",
    "00",
    "GB82",
    "WEST",
    "192.168.1.20",
    "2001:db8::7",
    "fe80::1%eth0",
    "00:1A:2B:3C:4D:5E",
    "00-1a-2b-3c-4d-5e",
    "0123.4567.89ab",
    "٠١٢٣٤٥٦٧٨٩",
    "０９０-１２３４-５６７８",
    "078-05-1120",
    "123-45-6789",
    "943 476 5919",
    "TCK-",
    "123456",
    "ana@example.com",
    "émile.zola@exemple.fr",
    "1BoatSLRHtKNngkdXEeobR76b53LETtpyT",
    "ünïcödé",
    "\n",
]


def corpus(n: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [rng.choice(PIECES) for _ in range(rng.randint(1, 12))]
        seps = [rng.choice(["", " ", " ", "  ", "-", "."]) for _ in parts]
        out.append("".join(p + s for p, s in zip(parts, seps)))
    return out


def test_prefilter_gives_exactly_what_presidio_gives_on_every_message():
    cfg = RedactConfig(
        entities=DEFAULT_ENTITIES
        + ["URL", "MAC_ADDRESS", "CRYPTO", "UK_NHS", "US_BANK_NUMBER", "US_ITIN", "DATE_TIME"],
        score_threshold=0.0,
        patterns=[
            {"entity": "TICKET_ID", "regex": r"(?<![\w-])TCK-\d{6}(?!\d)"},
            {"entity": "CODE_WORD", "regex": r"\b(?i:west)\s*\d{4}\b"},
        ],
        deny={"SECRET_PROJECT": ["ünïcödé"]},
    )
    r = Redactor(cfg)
    assert all(x is not None for x in r.prefilter.values()), r.unfiltered  # every one pre-filtered
    texts = corpus(1000)
    fast = r.redact(pa.array(texts))
    slow = r.redact(pa.array(texts), prefilter=False)
    assert fast.content.to_pylist() == slow.content.to_pylist()
    assert fast.found == slow.found and fast.found  # found plenty, the same
    assert fast.candidates < slow.candidates == len(texts)


def test_loosen_is_wider_and_re2():
    for rx, hits in [
        (r"(?<!\d)\d{3}-\d{2}(?!\d)", ["x123-45y", "1123-456"]),
        (r"\b[0-9A-F]{2}([:-])(?:[0-9A-F]{2}\1){4}[0-9A-F]{2}\b", ["00:1a-2b:3c:4d:5e"]),
        (r"(?P<w>\w+)@(?P=w)", ["ab@cd"]),
        (r"a{,3}b", ["aab"]),
        (r"(?>ab|a)c", ["ac"]),
        (r"\d++x", ["٣x"]),
    ]:
        wide = loosen(rx)
        assert wide is not None and re2_ok(wide), rx
        import pyarrow.compute as pc

        assert all(pc.match_substring_regex(pa.array(hits), wide).to_pylist()), (rx, wide)
    assert loosen(r"(?x) a b # verbose") is None


def test_phone_regions_narrow_what_reaches_presidio():
    texts = ["see you at 10:30 in 2024", "call +1 415-555-0134", "call 030 901820 in Berlin"]
    everywhere = Redactor(RedactConfig(entities=["PHONE_NUMBER"]))
    us = Redactor(RedactConfig(entities=["PHONE_NUMBER"], phone_regions=["us"]))
    a, b = everywhere.redact(pa.array(texts)), us.redact(pa.array(texts))
    assert a.candidates == 3 and b.candidates == 1  # a US number has 10 digits: the time and the 9 are not
    assert b.content.to_pylist()[1] == "call <PHONE_NUMBER>"
    assert a.content.to_pylist()[2] != texts[2] and b.content.to_pylist()[2] == texts[2]  # a German number
    with pytest.raises(ConfigError, match="phone_regions"):
        Redactor(RedactConfig(phone_regions=["XX"]))


# --- configuration errors stop before anything is read -------------------------------------


@pytest.mark.parametrize(
    "redact, key, words",
    [
        ({"entities": ["EMAIL_ADRESS"]}, "redact.entities", "unknown entity EMAIL_ADRESS"),
        ({"entities": ["PERSON", "EMAIL_ADDRESS"]}, "redact.entities", "spaCy"),
        ({"spacy_model": "en_core_web_lg"}, "redact.spacy_model", "not installed"),
        ({"operator": "hash"}, "redact.hash_secret_env", "MEMOS_ETL_REDACT_SECRET"),
        (
            {"patterns": [{"entity": "BAD", "regex": "(unclosed"}]},
            "redact.patterns[0].regex",
            "not a regular expression",
        ),
        ({"operators": {"URL": "mask"}}, "redact.operators.URL", "not among the entities"),
    ],
)
def test_config_errors_name_the_key(dev_server, run_config, tmp_path, monkeypatch, redact, key, words):
    monkeypatch.delenv("MEMOS_ETL_REDACT_SECRET", raising=False)
    write_jsonl(tmp_path / "d" / "x.jsonl", chat_rows(2, 2))
    m = sample_mapping_at(tmp_path, tmp_path / "d", redact=redact)
    with pytest.raises(ConfigError) as err:
        run(load_mapping(m), run_config)
    assert err.value.key == key and words in str(err.value)
    assert stats(dev_server.url)["add_requests"] == 0


def test_ner_entities_through_a_spacy_pipeline_folder(tmp_path):
    """PERSON comes from the spaCy pipeline named in redact.spacy_model (here a folder holding a
    blank English pipeline with an entity ruler: no model download on this machine)."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Ana Lopez"}, {"label": "GPE", "pattern": "Lisbon"}])
    nlp.to_disk(tmp_path / "pipeline")
    r = Redactor(RedactConfig(entities=["PERSON", "LOCATION", "EMAIL_ADDRESS"], spacy_model=str(tmp_path / "pipeline")))
    out = r.redact(pa.array(["Ana Lopez moved to Lisbon, mail ana@example.com", "nobody here"]))
    assert out.content.to_pylist() == ["<PERSON> moved to <LOCATION>, mail <EMAIL_ADDRESS>", "nobody here"]
    assert r.prefilter["PERSON"] is None and out.candidates == 2  # NER reads every message


# --- the commands: redact-check and preview, offline --------------------------------------


def test_redact_check_and_preview_show_what_would_be_removed_sending_nothing(tmp_path, network_guard):
    m, rows, want = source(tmp_path, "delta", seed=4, conversations=10)
    env = dict(os.environ, MEMOS_ETL_REDACT_SECRET=SECRET)
    cmd = [sys.executable, "-m", "memos_etl.cli", "redact-check", str(m), "--sample", "40", "--json"]
    out = subprocess.run(without_network(cmd) or cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    s = got["summary"]
    first = rows[:40]
    assert s["messages"] == 40 and s["dropped"] == sum(any(ip in r["text"] for ip in IPS) for r in first)
    assert s["entities"].get("EMAIL_ADDRESS", {}).get("operator", "hash") == "hash"
    assert all(x["after"] is None or not any(v in x["after"] for v in SENSITIVE) for x in got["examples"])
    assert s["read_by_presidio"] < 40

    # preview in this process (the conftest guard refuses anything past loopback here)
    from typer.testing import CliRunner

    from memos_etl.cli import app

    out = CliRunner().invoke(app, ["preview", str(m), "-n", "50", "--json"], env=env)
    assert out.exit_code == 0, out.output
    shown = json.loads(out.stdout)
    bodies = json.dumps([r["body"] for r in shown["requests"]], ensure_ascii=False)
    assert not any(v in bodies for v in SENSITIVE)
    assert "<PHONE_NUMBER>" in bodies or "<IBAN_CODE>" in bodies or "<TICKET_ID>" in bodies
    assert shown["summary"]["redaction_dropped"] >= 1
    assert network_guard.attempts == []


def test_redaction_turned_on_after_delivery_rewrites_what_was_sent_raw(dev_server, run_config, tmp_path, monkeypatch):
    """Loaded raw, then the security review: add `redact:` with on_change: replace, reset the
    source so it is read again, sync. The messages whose text redaction changes count as
    changed after delivery; their conversations are rewritten; the store ends clean."""
    from core.ledger import Ledger

    monkeypatch.setenv("MEMOS_ETL_REDACT_SECRET", SECRET)
    m, rows, want = source(tmp_path, "epsilon", seed=6, conversations=12)
    body = yaml.safe_load(m.read_text())
    raw = dict(body)
    raw.pop("redact")
    m.write_text(yaml.safe_dump(raw))
    first = run(load_mapping(m), run_config)
    assert first.status == "completed" and any(
        v in json.dumps(list(stored_contents(dev_server.url).values())) for v in SENSITIVE
    )

    m.write_text(yaml.safe_dump(dict(body, on_change="replace")))
    led = Ledger(run_config.state.ledger())
    led.reset_cursor("epsilon", run_config.target.ledger_name)
    led.close()
    again = run(load_mapping(m), run_config)
    assert again.status == "completed", again.text()
    c = again.counts
    assert c.changed_after_delivery == sum(1 for r in rows if r["want"] is not None and r["want"] != r["text"])
    assert c.redaction_dropped == sum(1 for r in rows if r["want"] is None) > 0  # delivered raw, now dropped
    assert any("now dropped by redaction" in n for n in again.notes)
    assert again.rewrite and again.rewrite["status"] == "completed"
    stored = stored_contents(dev_server.url)
    assert stored == want
    assert not any(v in json.dumps(list(stored.values()), ensure_ascii=False) for v in SENSITIVE)


def test_stage_threads_share_one_redactor():
    """A run's stage threads call one Redactor at once: each gets what a lone call gives."""
    from concurrent.futures import ThreadPoolExecutor

    r = Redactor(
        RedactConfig(
            entities=DEFAULT_ENTITIES + ["MAC_ADDRESS"], patterns=[{"entity": "TICKET_ID", "regex": r"\bTCK-\d{6}\b"}]
        )
    )
    texts = corpus(300, seed=9)
    chunks = [texts[i::4] for i in range(4)]
    alone = [r.redact(pa.array(c)).content.to_pylist() for c in chunks]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda c: r.redact(pa.array(c)).content.to_pylist(), chunks * 2))
    assert together == alone * 2 and sum(a != b for a, b in zip(texts[::4], alone[0])) > 0
