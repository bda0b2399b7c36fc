"""Documents: files from a folder, S3 or a zip, uploaded into MemOS knowledge bases exactly once.

* check.py  what is uploaded for one file: its type by the extension, MemOS's limits (size,
            pages), the right format behind the extension, text re-encoded as UTF-8 and HTML
            converted to Markdown; or why it is skipped
"""
