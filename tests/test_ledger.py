"""Ledger lookups on both databases, with keys at the edges of int64."""

from __future__ import annotations

import numpy as np
import pytest

from core.ledger import BatchRecord, Ledger


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_ledger_url")


def test_message_status_sent_delivered_unknown(ledger_url):
    led = Ledger(ledger_url)
    lo = np.array([-(2**63), 5, 2**63 - 1, 7], dtype=np.int64)
    hi = np.array([1, 2, 3, 4], dtype=np.int64)
    rec = BatchRecord("bk", "s", "r", "u", "c", 1, "a", "b", 1, lo[:3], hi[:3], np.zeros(3, dtype=np.int64))
    led.record_sent("t", rec)
    assert list(led.message_status("t", lo, hi)) == ["sent", "sent", "sent", ""]
    assert list(led.message_status("other-target", lo, hi)) == ["", "", "", ""]
    led.record_delivered("t", rec, None)
    # the same low half with another high half is another message
    assert list(led.message_status("t", lo, np.array([1, 9, 3, 4]))) == ["delivered", "", "delivered", ""]
    many = np.arange(-50_000, 50_000, dtype=np.int64)  # more keys than one chunk
    assert (led.message_status("t", many, many) == "").all()
    led.close()


def test_two_new_runs_saving_a_sources_state_at_once(pg_ledger_url):
    """Two runs of a source the ledger has no state for (backfill parts side by side): the
    other commits its row between this one's read and its insert; this one updates that row
    instead of failing on the unique key (seen as a failed backfill part)."""
    import sqlalchemy as sa

    from core.ledger import Ledger

    a, b = Ledger(pg_ledger_url), Ledger(pg_ledger_url)
    fired: list[int] = []

    @sa.event.listens_for(b.engine, "before_cursor_execute")
    def the_other_run_first(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO SOURCE_STATE") and not fired:
            fired.append(1)
            a.save_source_state("s", "t", None, {"x": "int"}, move_cursor=False)

    try:
        b.save_source_state("s", "t", '{"t": "int", "v": 3}', {"x": "int", "y": "string"}, move_cursor=True)
        assert fired
        assert b.source_state("s", "t") == ('{"t": "int", "v": 3}', {"x": "int", "y": "string"})
    finally:
        a.close()
        b.close()
