"""The systems compared: our static model, the teacher itself, and model2vec's distill.

Each becomes a plain ``texts -> vectors`` function so the tasks treat them alike.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill_job.evaluation.tasks import Embed
from distill_job.teacher import DEFAULT_TEACHER_NAME, default_teacher_path, transformer_dir

STATIC_BATCH = 1024  # texts per encoder call: bounds the gathered rows of long documents
TEACHER_BATCH = 64


@dataclass(frozen=True)
class System:
    name: str  # the row label in the table
    kind: str  # "static", "teacher" or "model2vec"
    path: str
    embed: Embed


def static_system(model_dir: Path, name: str | None = None) -> System:
    """Our model, encoded exactly as the service does: app's loader and encoder."""
    from app.encoder import Encoder
    from app.model_format import load_model

    encoder = Encoder(load_model(model_dir))

    def embed(texts: Sequence[str]) -> np.ndarray:
        chunks = [encoder.encode(texts[i : i + STATIC_BATCH]) for i in range(0, len(texts), STATIC_BATCH)]
        return np.concatenate(chunks) if chunks else np.zeros((0, encoder.dimensions), dtype=np.float32)

    return System(name or model_dir.name, "static", str(model_dir), embed)


def teacher_system(teacher_dir: Path, cache_dir: Path | None = None) -> System:
    """The sentence transformer, run as sentence-transformers runs it (mean pooling, normalized).

    With ``cache_dir``, embeddings are kept per (teacher, texts) so later runs skip the
    slowest part; the teacher is deterministic, so cached vectors give the same scores.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(str(teacher_dir), device="cpu")

    def embed(texts: Sequence[str]) -> np.ndarray:
        cached = _cache_file(cache_dir, teacher_dir, texts) if cache_dir else None
        if cached is not None and cached.is_file():
            return np.load(cached)
        vectors = model.encode(
            list(texts), batch_size=TEACHER_BATCH, normalize_embeddings=True, convert_to_numpy=True
        ).astype(np.float32)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, vectors)
        return vectors

    return System("teacher", "teacher", str(teacher_dir), embed)


def _cache_file(cache_dir: Path, teacher_dir: Path, texts: Sequence[str]) -> Path:
    digest = hashlib.sha256(str(teacher_dir.resolve()).encode())
    digest.update(json.dumps(list(texts)).encode())
    return cache_dir / f"teacher-{digest.hexdigest()[:24]}.npy"


def model2vec_system(model_dir: Path) -> System:
    """A model2vec directory encoded by model2vec's own ``encode`` (no 512-token cut)."""
    from model2vec import StaticModel

    model = StaticModel.from_pretrained(str(model_dir))

    def embed(texts: Sequence[str]) -> np.ndarray:
        return np.asarray(
            model.encode(list(texts), max_length=None, batch_size=STATIC_BATCH, use_multiprocessing=False),
            dtype=np.float32,
        )

    return System("model2vec", "model2vec", str(model_dir), embed)


def distill_with_model2vec(teacher_dir: Path, dims: int, output: Path) -> Path:
    """model2vec 0.10's ``distill`` of the same teacher at the same width, saved to ``output``."""
    from model2vec.distill import distill

    model = distill(model_name=str(transformer_dir(teacher_dir)), pca_dims=dims)
    model.save_pretrained(str(output))
    return output


def resolve_teacher(spec: str, model_dir: Path) -> Path:
    """``auto`` means the teacher recorded in the model's metadata (the bundled default if so)."""
    if spec != "auto":
        return Path(spec).expanduser()
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    name = (config.get("static_embed") or {}).get("teacher") or config.get("tokenizer_name")
    if not name or name == DEFAULT_TEACHER_NAME:
        return default_teacher_path()
    return Path(name).expanduser()
