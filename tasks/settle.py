"""Settle: did an unconfirmed (in-doubt) request reach the target? Ask it before sending again.

A request that got no answer (timeout, dropped connection, a server error after the write,
or a process killed mid-request) may or may not have been applied. MemOS has no request id
to look up, but it lists the latest messages of a conversation (`/get/message`, up to 50).
We compare hashes of (role, content): if the conversation ends with the request's messages
it arrived; if not, it did not. One case is ambiguous and reported as such: the
conversation already ended with those same messages before the request (a repeated
exchange), which the ledger's per-conversation tail of delivered hashes reveals.

The self-hosted server keeps no raw messages to list, but its memories carry the request's
`info` (our batch_key) and the raw messages they came from (`sources`): a memory naming the
request means it landed; a settled, complete listing with neither the batch_key nor all of
its messages means it did not; memories still at the fast stage after a bounded wait, or a
listing that may be incomplete, mean cannot tell (SelfHostedTarget.request_landed).
"""

from __future__ import annotations

import json
import logging

import numpy as np

from core.errors import CannotTell, TerminalBatchError, TransientError
from core.ledger import TAIL, BatchRecord, Ledger
from core.report import Counts
from tasks.batch import message_hashes

log = logging.getLogger("memos_etl.reconcile")


def landed(held: list[dict], ours: np.ndarray, prior_tail: np.ndarray) -> bool | None:
    """True: the target holds the request; False: it does not; None: cannot tell."""
    k = min(len(ours), TAIL)
    want = ours[-k:]
    theirs = message_hashes(held)
    if len(theirs) >= k and np.array_equal(theirs[-k:], want):
        # the conversation ends with our messages; unless it already did before we sent them
        if len(prior_tail) >= k and np.array_equal(prior_tail[-k:], want):
            return None
        return True
    return False


def landed_in_memories(nodes: list[dict], ours: np.ndarray, prior_tail: np.ndarray) -> bool | None:
    """The self-hosted evidence when no memory names the request: its messages among the raw
    messages the session's memories came from (`sources`). True when every one of them is
    there and they were not already delivered before it (a repeated exchange: cannot tell)."""
    sources = [_source(s) for n in nodes for s in ((n.get("metadata") or {}).get("sources") or [])]
    found = [s for s in sources if s is not None]
    if not len(ours) or not found:
        return False
    if not np.isin(ours, message_hashes(found)).all():
        return False
    if len(prior_tail) and np.isin(ours, prior_tail).any():
        return None
    return True


def _source(s) -> dict | None:
    """A memory's source message: a dict, or (MemOS 2.0.33) its JSON text."""
    if isinstance(s, str):
        try:
            s = json.loads(s)
        except ValueError:
            return None
    return s if isinstance(s, dict) else None


def check(client, ledger: Ledger, target: str, rec: BatchRecord) -> bool | None:
    """Ask the target whether an unconfirmed request arrived; None when it cannot tell."""
    try:
        held = client.get_messages(rec.user_id, rec.conversation_id, limit=TAIL)
    except CannotTell:
        try:  # self-hosted: read it from the session's memories (their info and sources)
            found, nodes = client.request_landed(rec.user_id, rec.conversation_id, rec.batch_key)
        except CannotTell:
            return None
        except (TransientError, TerminalBatchError) as exc:
            log.warning("%s/%s: cannot check the target's memories: %s", rec.user_id, rec.conversation_id, exc)
            return None
        if found is not False:
            return found
        by_sources = landed_in_memories(
            nodes, rec.msg_hashes, ledger.conversation_tail(target, rec.user_id, rec.conversation_id)
        )
        return by_sources
    except (TransientError, TerminalBatchError) as exc:
        log.warning("%s/%s: cannot check what the target holds: %s", rec.user_id, rec.conversation_id, exc)
        return None
    prior = ledger.conversation_tail(target, rec.user_id, rec.conversation_id)
    return landed(held, rec.msg_hashes, prior)


def resolve_unconfirmed(client, ledger: Ledger, target: str, source: str, counts: Counts) -> None:
    """At the start of a run: settle every request an earlier run left unconfirmed."""
    for rec in ledger.unconfirmed(target, source):
        outcome = check(client, ledger, target, rec)
        if outcome is True:
            ledger.record_delivered(target, rec, None)
            counts.reconciled_landed += 1
        elif outcome is False:
            ledger.forget_unsent(target, rec)  # its messages are sent again, in order, by this run
            counts.reconciled_missing += 1
        else:
            counts.reconciled_unknown += 1
