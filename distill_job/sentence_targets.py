"""The teacher's own sentence embeddings of a corpus: the targets the refinement stage fits.

They are computed as sentence-transformers computes them (the pooling named in the
teacher's ``1_Pooling/config.json``, at its ``max_seq_length``), then scaled to length 1,
because the static model is only ever compared by cosine. The slow part of refinement,
so they can be kept in a cache directory keyed by teacher, settings and texts.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from distill_job.teacher import Teacher

CACHE_CHUNK = 4096
_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}


@dataclass(frozen=True)
class SentencePooling:
    mode: str  # "mean", "cls" or "max"
    max_tokens: int


def sentence_pooling(teacher: Teacher) -> SentencePooling:
    """The teacher's sentence pooling; mean over at most 512 tokens when it does not say."""
    limit = int(getattr(teacher.model.config, "max_position_embeddings", 512))
    mode, max_tokens = "mean", min(limit, 512)
    root = teacher.root
    if root is not None:
        settings = _read_json(root / "sentence_bert_config.json")
        if isinstance(settings.get("max_seq_length"), int):
            max_tokens = min(limit, settings["max_seq_length"])
        for module in _read_json(root / "modules.json", default=[]):
            if str(module.get("type", "")).endswith("models.Pooling"):
                pooling = _read_json(root / module.get("path", "") / "config.json")
                mode = next((name for key, name in _POOLING_KEYS.items() if pooling.get(key)), "mean")
    return SentencePooling(mode, max_tokens)


def teacher_embeddings(
    teacher: Teacher,
    texts: Sequence[str],
    batch_size: int = 128,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Unit-length teacher embeddings, one float32 row per text.

    With ``cache_dir``, texts are embedded in chunks of ``CACHE_CHUNK`` kept on disk, so an
    interrupted run resumes and a run on the first N texts of a corpus reuses a longer one's work.
    """
    pooling = sentence_pooling(teacher)
    parts = []
    with tqdm(total=len(texts), desc="Teacher on corpus", unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), CACHE_CHUNK if cache_dir else max(len(texts), 1)):
            chunk = texts[start : start + CACHE_CHUNK] if cache_dir else texts
            cached = _cache_path(cache_dir, teacher, pooling, chunk) if cache_dir else None
            if cached is not None and cached.is_file():
                parts.append(np.load(cached))
                bar.update(len(chunk))
                continue
            vectors = _embed(teacher, chunk, pooling, batch_size, bar)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                partial = cached.with_suffix(".partial.npy")
                np.save(partial, vectors)
                partial.replace(cached)
            parts.append(vectors)
    hidden = int(teacher.model.config.hidden_size)
    return np.concatenate(parts) if parts else np.empty((0, hidden), dtype=np.float32)


def _embed(teacher: Teacher, texts: Sequence[str], pooling: SentencePooling, batch_size: int, bar: tqdm) -> np.ndarray:
    import torch

    tokenizer, model = teacher.tokenizer, teacher.model
    takes_token_types = "token_type_ids" in inspect.signature(model.forward).parameters
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad little
    out = np.empty((len(texts), int(model.config.hidden_size)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            inputs = tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=pooling.max_tokens,
                return_tensors="pt",
            )
            if not takes_token_types:
                inputs.pop("token_type_ids", None)
            states = model(**inputs).last_hidden_state.float()
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            if pooling.mode == "cls":
                pooled = states[:, 0]
            elif pooling.mode == "max":
                pooled = states.masked_fill(mask == 0, -1e9).max(1).values
            else:
                pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
            bar.update(len(rows))
    return out


def _cache_path(cache_dir: Path, teacher: Teacher, pooling: SentencePooling, texts: Sequence[str]) -> Path:
    digest = hashlib.sha256(json.dumps([teacher.name, teacher.source, pooling.mode, pooling.max_tokens]).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return cache_dir / f"teacher-{digest.hexdigest()[:24]}.npy"


def _read_json(path: Path, default: object = None) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {} if default is None else default
