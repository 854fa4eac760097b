"""Entry point for ``python -m app.bulk``."""

import os
import sys

from app.bulk.cli import main

code = main()
if "ray" in sys.modules:
    sys.exit(code)  # Ray's exit handlers stop the local instance the command started
# Everything is written, synced and closed: skip the interpreter's teardown, which frees
# the model, the tokenizer and every module one by one (about 40 ms, 1% of a 200k-row run).
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
