"""Extract: list a source's units of work and stream each as pyarrow record batches.

* kinds.py    the registry: `source.type: X` is tasks/extract/X.py and its KIND
* units.py    Unit, Slice, file-name suffixes, Hive partition values
* files.py    local files and S3 objects: Parquet, JSONL, CSV, JSON documents
* s3.py       S3 listing and credentials (read through files.py)
* sql.py      SQL tables and queries by cursor range
* redis.py    Redis keys (chat histories), dealt into shards by a hash of the key
* streams.py  bytes and text as downloaded: compression, zip members, encodings
* lines.py, csvfile.py, records.py  the readers, each isolating a bad record
* depth.py    the nesting guard JSON documents are read through
* chatlines.py  chat logs written as lines (WhatsApp "Export chat")
* slack.py    Slack workspace exports: day files with the workspace's directory
* delta.py, iceberg.py  lakehouse tables read as tables (lakehouse.py: refused as files)
"""

from __future__ import annotations

from tasks.extract.blocks import ROW_COLUMN
from tasks.extract.files import FileSource, list_local, row_group_runs, with_members
from tasks.extract.kinds import Kind, kind_of, open_source
from tasks.extract.units import Slice, Unit, suffixes, wanted

__all__ = [
    "ROW_COLUMN",
    "FileSource",
    "Kind",
    "Slice",
    "Unit",
    "list_local",
    "kind_of",
    "open_source",
    "row_group_runs",
    "suffixes",
    "wanted",
    "with_members",
]
