"""Run every vocabulary token through the teacher once and pool its output."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

POOLING_MODES = ("mean", "first", "inner")


def embed_tokens(
    model: object,
    tokenizer: object,
    teacher_ids: Sequence[int],
    pooling: str = "mean",
    batch_size: int = 1024,
    progress: bool = True,
) -> np.ndarray:
    """One row per token: the teacher's output for the token framed by its special tokens.

    Each token is fed as the teacher sees a one-token text (``[CLS] token [SEP]`` for
    BERT). ``mean`` averages all positions, as the teacher's own sentence pooling does;
    ``first`` takes the ``[CLS]`` position.
    """
    return embed_sequences(
        model, tokenizer, [[int(i)] for i in teacher_ids], pooling, batch_size, progress, "Embedding tokens"
    )


def embed_sequences(
    model: object,
    tokenizer: object,
    sequences: Sequence[Sequence[int]],
    pooling: str = "mean",
    batch_size: int = 1024,
    progress: bool = True,
    description: str = "Embedding words",
) -> np.ndarray:
    """One row per id sequence (a token, or a whole word's pieces), framed and pooled as a text.

    Sequences are run shortest first so that each batch pads little; rows come back in
    the order given.
    """
    import torch

    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {POOLING_MODES}")
    prefix, suffix = special_frame(tokenizer.backend_tokenizer)
    framed = [[*prefix, *map(int, seq), *suffix] for seq in sequences]
    order = sorted(range(len(framed)), key=lambda i: len(framed[i]))
    pad_id = tokenizer.pad_token_id or 0
    takes_token_types = "token_type_ids" in inspect.signature(model.forward).parameters
    hidden = int(model.config.hidden_size)
    out = np.empty((len(framed), hidden), dtype=np.float32)
    with (
        torch.inference_mode(),
        tqdm(total=len(framed), desc=description, unit="tok", disable=not progress) as bar,
    ):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            chunk = [framed[i] for i in rows]
            width = max(map(len, chunk))
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            inputs = {"input_ids": ids, "attention_mask": mask}
            if takes_token_types:
                inputs["token_type_ids"] = torch.zeros_like(ids)
            states = model(**inputs).last_hidden_state.float()
            out[rows] = _pool(states, mask, pooling, len(prefix), len(suffix)).numpy()
            bar.update(len(chunk))
    return np.nan_to_num(out)


def _pool(states: object, mask: object, pooling: str, n_prefix: int, n_suffix: int) -> object:
    """``mean``: all positions; ``first``: the ``[CLS]`` position; ``inner``: the text's own positions."""
    if pooling == "first":
        return states[:, 0]
    weights = mask.unsqueeze(-1).float()
    if pooling == "inner":
        weights = weights.clone()
        weights[:, :n_prefix] = 0
        lengths = mask.sum(1)
        for row, length in enumerate(lengths.tolist()):
            weights[row, length - n_suffix : length] = 0
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def special_frame(tokenizer: object, probe: str = "hello") -> tuple[list[int], list[int]]:
    """The special ids the teacher's tokenizer puts before and after a text's own ids.

    Padding and truncation are switched off on a copy first: a tokenizer saved with fixed
    padding (all-MiniLM-L6-v2 pads to 128) would otherwise hide the frame behind pad ids,
    and every token would be embedded without ``[CLS]``/``[SEP]``.
    """
    from tokenizers import Tokenizer

    probe_tokenizer = Tokenizer.from_str(tokenizer.to_str())
    probe_tokenizer.no_padding()
    probe_tokenizer.no_truncation()
    bare = probe_tokenizer.encode(probe, add_special_tokens=False).ids
    framed = probe_tokenizer.encode(probe, add_special_tokens=True).ids
    for start in range(len(framed) - len(bare) + 1):
        if framed[start : start + len(bare)] == bare:
            return framed[:start], framed[start + len(bare) :]
    return [], []
