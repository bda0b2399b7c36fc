"""Conversations stored as a tree of messages: an edited prompt or a regenerated answer makes
siblings, and the app shows one path from the root to a leaf. ChatGPT's `mapping` (a dict of
nodes by id, `current_node` naming the leaf shown), Claude's `chat_messages` (a list of nodes
with `parent_message_uuid`, no leaf named: the newest is taken) and the app databases alike.

`paths` gives the path shown and, with branches `all`, each abandoned branch: the path from
the root through its fork to that branch's newest leaf, tagged "~<id of its first node>"."""

from __future__ import annotations

from datetime import UTC, datetime

from core.config import NestLevel
from core.errors import NestError
from tasks.nest.columns import dotted


def paths(nodes: dict | list, level: NestLevel, current, everything: bool) -> list[tuple[str, list]]:
    """(tag, nodes from the root to a leaf) per path loaded: the shown path first (tag ""),
    then with `everything` each abandoned branch. A list whose nodes name no parent is one
    path as it is (an older export); a parent that is missing or a cycle is a NestError."""
    where = level.column
    if isinstance(nodes, list):
        by_id: dict = {}
        for i, node in enumerate(nodes):
            key = node.get(level.id or "id") if isinstance(node, dict) else None
            if key is None:
                raise NestError(f"{where}[{i}] is not a message with {level.id or 'id'}")
            by_id[key] = node
        if not any(n.get(level.parent) is not None for n in nodes):
            return [("", list(nodes))]
    else:
        by_id = nodes
    tree = _Tree(by_id, level)
    if current is not None:
        shown = tree.climb(current, named=True)
    elif not everything:  # the path shown only: the newest leaf and its ancestors
        parents = set(tree.up.values())  # once, not per node
        shown = tree.climb(tree.newest([k for k in tree.up if k not in parents]))
    else:
        shown = tree.down(None)
    if not everything:
        return [("", [by_id[k] for k in shown])]
    out = [("", shown)]
    todo = [(shown, 0)]  # a path, and where on it its own branches start
    while todo:
        path, start = todo.pop(0)
        for i in range(start, len(path) + 1):
            for child in tree.kids.get(path[i - 1] if i else None, ()):
                if i < len(path) and child == path[i]:
                    continue
                branch = path[:i] + tree.down(child)
                out.append((f"~{child}", branch))
                todo.append((branch, i + 1))
    reached = {k for _, p in out for k in p}
    if len(reached) < len(tree.up):  # all parents exist: a node no root leads to is in a cycle
        lost = next(k for k in tree.up if k not in reached)
        raise NestError(f"cycle in {where}: node {lost!r} is its own ancestor")
    return [(tag, [by_id[k] for k in p]) for tag, p in out]


class _Tree:
    """The nodes' parent links (`up`) and children (`kids`, in the column's order)."""

    def __init__(self, by_id: dict, level: NestLevel):
        self.by_id, self.level = by_id, level
        self.up = {k: self._parent(n) for k, n in by_id.items() if isinstance(n, dict)}
        self._kids: dict | None = None

    def _parent(self, node: dict):
        p = node.get(self.level.parent)
        return None if p is None or (self.level.root is not None and p == self.level.root) else p

    @property
    def kids(self) -> dict:
        if self._kids is None:
            kids: dict = {}
            where = self.level.column
            for k, p in self.up.items():
                if p is not None and p not in self.up:
                    raise NestError(f"missing node in {where}: {p!r} (the parent of {k!r})")
                kids.setdefault(p, []).append(k)
            self._kids = kids
        return self._kids

    def climb(self, leaf, named: bool = False) -> list:
        """The ids from the root down to `leaf`, by parent links."""
        path: list = []
        seen: set = set()
        key = leaf
        while key is not None:
            if key in seen:
                raise NestError(f"cycle in {self.level.column}: node {key!r} is its own ancestor")
            seen.add(key)
            if key not in self.up:
                said = f" (named by {self.level.current})" if named and key == leaf else ""
                if path:
                    said = f" (the parent of {path[-1]!r})"
                raise NestError(f"missing node in {self.level.column}: {key!r}{said}")
            path.append(key)
            key = self.up[key]
        path.reverse()
        return path

    def down(self, start) -> list:
        """The ids from `start` (None: the roots) down to the newest leaf below it."""
        below, stack = [], list(self.kids.get(start, ()))
        while stack:
            k = stack.pop()
            below.append(k)
            stack.extend(self.kids.get(k, ()))
        leaf = self.newest([k for k in below if k not in self.kids]) if below else start
        path = []
        key = leaf
        while key != start:
            path.append(key)
            key = self.up[key]
        if start is not None:
            path.append(start)
        path.reverse()
        return path

    def newest(self, leaves: list):
        """The newest of `leaves`: by the `newest` time, then the later in the column."""
        if not leaves:
            raise NestError(f"cycle in {self.level.column}: every message has a reply, none is the last")
        key = self.level.newest
        rank = {k: i for i, k in enumerate(self.by_id)}

        def when(k) -> tuple:
            t = _when(dotted(self.by_id[k], key.split("."))) if key else None
            return (t is not None, t or 0.0, rank[k])

        return max(leaves, key=when)


def _when(v) -> float | None:
    """A time as epoch seconds: a number as it is, ISO text parsed (UTC when naive); else None."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            t = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    return None


def off_path(nodes, level: NestLevel, shown_elems: list) -> list:
    """The elements of the nodes not on the path shown (`shown_elems`: its elements), in the
    column's order, each once: the answers a regeneration replaced and the prompts an edit
    replaced (nest.abandoned mark). A node whose parent is missing, or that no root leads to
    (a cycle), is a NestError."""
    if not nodes or not isinstance(nodes, (dict, list)):
        return []
    if level.value is None:
        shown = shown_elems
    else:  # the nodes of the path, found again by their element
        on_elem = {id(e) for e in shown_elems}
        items = nodes.values() if isinstance(nodes, dict) else nodes
        shown = [n for n in items if isinstance(n, dict) and id(n.get(level.value)) in on_elem]
    by_id = {n.get(level.id or "id"): n for n in nodes if isinstance(n, dict)} if isinstance(nodes, list) else nodes
    tree = _Tree(by_id, level)
    tree.kids  # noqa: B018  # every parent link checked: a missing parent is a NestError
    on_path = {id(n) for n in shown}
    sound = {k for k, n in by_id.items() if id(n) in on_path}  # reach a root: the path, and checked ones
    out = []
    for k, n in by_id.items():
        if not isinstance(n, dict) or id(n) in on_path:
            continue
        seen: set = set()
        key = k
        while key is not None and key not in sound:  # up to a node known to reach a root
            if key in seen:
                raise NestError(f"cycle in {level.column}: node {key!r} is its own ancestor")
            seen.add(key)
            key = tree.up[key]
        sound.update(seen)
        v = n if level.value is None else n.get(level.value)
        if v is not None:
            out.append(v)
    return out
