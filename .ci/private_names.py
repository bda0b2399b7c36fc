"""No private name imported from another module: the house rule ruff's PLC2701 checks only
across top-level packages (it lets `tasks.stage` import `tasks.redact.engine._x`). This checks
every `from <first-party module> import _name` whose module is not the importer itself.

Run from the repository root: `uv run python .ci/private_names.py`; exit 1 lists each use.
"""

from __future__ import annotations

import ast
import pathlib
import sys

ROOTS = ("memos_etl", "flows", "tasks", "core", "schemas", "benchmarks", "tests")


def module_of(path: pathlib.Path) -> str:
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def uses(path: pathlib.Path) -> list[str]:
    here = module_of(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        if node.module.split(".")[0] not in ROOTS or node.module == here:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{path}:{node.lineno}: private name {alias.name} imported from {node.module}")
    return found


def main() -> int:
    problems = [
        line
        for root in ROOTS
        for path in sorted(pathlib.Path(root).rglob("*.py"))
        if "migrations/versions" not in path.as_posix()
        for line in uses(path)
    ]
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
