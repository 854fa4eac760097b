"""Bulk embedding of large files: ``python -m app.bulk --help``.

Going through HTTP to re-index millions of documents spends most of its time on JSON;
this package reads a file of texts, embeds it with the same encoder at full speed and
writes the vectors next to the input's ids. Locally it streams in chunks (flat memory,
resumable); with ``--ray`` the same job runs on a Ray cluster.
"""
