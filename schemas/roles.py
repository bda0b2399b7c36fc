"""What MemOS accepts in a message's role and ids: plain constants, importable without
pyarrow (the config and the CLI's quick commands need them; schemas/message.py re-exports)."""

#: Roles MemOS accepts in a message.
ALLOWED_ROLES = ("user", "assistant", "system", "tool")

#: MemOS rejects ids longer than this (error 4000x).
MAX_ID_CHARS = 100
