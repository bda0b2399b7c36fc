"""One person across apps, in a batch (core/config/people.py has the `people:` map): ids looked
up column-wise (a dictionary lookup in pyarrow compute, no loop over rows) for the MemOS user,
the names in front of others' text, and WhatsApp chats copied once per mapped person who
speaks in them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from core.config import Mapping
from core.config.people import names_of

#: the columns a copy per person adds (as tasks/nest does for its perspectives)
PERSPECTIVE = "perspective"
PERSPECTIVE_ROLE = "perspective.role"

Batches = Iterator[tuple[int, pa.RecordBatch]]


def lookup(values: pa.Array, table: dict[str, str]) -> pa.Array:
    """Each value's entry in `table`, null where it has none."""
    if not table:
        return pa.nulls(len(values), pa.string())
    keys, found = pa.array(list(table), pa.string()), pa.array(list(table.values()), pa.string())
    return pc.take(found, pc.index_in(values.cast(pa.string()), value_set=keys))


def user_ids(mapping: Mapping, user: pa.Array | None) -> pa.Array | None:
    """fields.user_id with `<app>-<id>` of a mapped id replaced by its person's key: one MemOS
    user per person across apps. Ids not in the map keep their `<app>-<id>`."""
    owners = mapping.person_of()
    if user is None or not owners:
        return user
    by_user_id = {f"{mapping.app}-{pid}": key for pid, key in owners.items()}
    return pc.coalesce(lookup(user, by_user_id), user)


def names(mapping: Mapping, rb: pa.RecordBatch, who: pa.Array) -> pa.Array:
    """The names put in front of others' text: a mapped speaker's `name`, else the export's."""
    speaker = mapping.speaker_column()
    if speaker is None or not mapping.people:
        return who
    return pc.coalesce(lookup(rb.column(speaker), names_of(mapping.people, mapping.app)), who)


def each_person(make: Callable[[list], Batches], bad: list, mapping: Mapping) -> Batches:
    """A chat's batches once per person of `people` who speaks in it (of those `perspective`
    lists, when it lists): `perspective` their key, `perspective.role` user for their messages
    and assistant for everyone else's. `make(bad)` reads the chat; it is read twice, first for
    who speaks (its bad records counted on the second read only). Speakers not in the map are
    the others; a chat where no mapped person speaks is in no one's memory."""
    speaker = mapping.speaker_column()
    assert speaker is not None  # the whatsapp-txt-each preset names it
    owners = mapping.person_of()
    only = mapping.perspective_ids()
    holders: dict[str, None] = {}  # in order of their first word
    for _, rb in make([]):
        for key in lookup(pc.unique(rb.column(speaker)), owners).to_pylist():
            if key is not None and (only is None or key in only or only & set(mapping.people[key].ids("whatsapp"))):
                holders.setdefault(key, None)
    if not holders:
        return
    for start, rb in make(bad):
        person = lookup(rb.column(speaker), owners)
        for key in holders:
            mine = pc.equal(pc.fill_null(person, ""), pa.scalar(key))
            role = pc.if_else(mine, pa.scalar("user"), pa.scalar("assistant"))
            role = pc.if_else(pc.is_null(rb.column(speaker)), pa.scalar(None, pa.string()), role)
            copy = rb.append_column(PERSPECTIVE, pa.repeat(pa.scalar(key, pa.string()), rb.num_rows))
            yield start, copy.append_column(PERSPECTIVE_ROLE, role)
