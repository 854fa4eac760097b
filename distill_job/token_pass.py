"""Run every vocabulary token through the teacher once and pool its output."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

POOLING_MODES = ("mean", "first")


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
    import torch

    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {POOLING_MODES}")
    prefix, suffix = special_frame(tokenizer.backend_tokenizer)
    sequences = [[*prefix, int(i), *suffix] for i in teacher_ids]
    pad_id = tokenizer.pad_token_id or 0
    takes_token_types = "token_type_ids" in inspect.signature(model.forward).parameters
    hidden = int(model.config.hidden_size)
    out = np.empty((len(sequences), hidden), dtype=np.float32)
    with (
        torch.inference_mode(),
        tqdm(total=len(sequences), desc="Embedding tokens", unit="tok", disable=not progress) as bar,
    ):
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
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
            if pooling == "mean":
                weights = mask.unsqueeze(-1).float()
                pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
            else:
                pooled = states[:, 0]
            out[start : start + len(chunk)] = pooled.numpy()
            bar.update(len(chunk))
    return np.nan_to_num(out)


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
