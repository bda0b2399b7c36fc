"""`python -m memos_etl.cli ...` (tests drive the CLI as a real process this way)."""

from memos_etl.cli import app

if __name__ == "__main__":
    app()
