"""Choose the tokens worth a table row and build the tokenizer the service will use.

Tokens the tokenizer can never produce (BERT's ``[unused…]`` placeholders) are removed
and the remaining ids renumbered, so the table holds one row per id that can occur. The
post-processor is dropped because static pooling adds no ``[CLS]``/``[SEP]``; padding and
truncation are switched off so every token of a text is pooled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from tokenizers import Tokenizer

from distill_job.errors import DistillError

DEFAULT_REMOVE_PATTERN = r"\[unused\d+\]"


@dataclass(frozen=True)
class Vocabulary:
    tokenizer: Tokenizer  # the trimmed tokenizer, ids 0..n-1
    teacher_ids: list[int]  # teacher_ids[new_id] is the token's id in the teacher's tokenizer
    tokens: list[str]  # tokens[new_id]


def build_vocabulary(teacher_tokenizer_json: str, remove_pattern: str | None = DEFAULT_REMOVE_PATTERN) -> Vocabulary:
    spec = json.loads(teacher_tokenizer_json)
    model = spec["model"]
    try:
        regex = re.compile(remove_pattern) if remove_pattern else None
    except re.error as exc:
        raise DistillError(f"--remove-tokens is not a valid regular expression: {exc}") from exc

    by_id = _tokens_by_id(model, spec.get("added_tokens", []))
    kept = [(old, tok) for old, tok in enumerate(by_id) if tok is not None and not (regex and regex.fullmatch(tok))]
    if not kept:
        raise DistillError("no token is left after --remove-tokens; the pattern removes everything")
    new_id = {old: new for new, (old, _) in enumerate(kept)}

    vocab = model["vocab"]
    if isinstance(vocab, dict):  # WordPiece, BPE, WordLevel: token -> id
        model["vocab"] = {tok: new_id[old] for tok, old in vocab.items() if old in new_id}
    elif isinstance(vocab, list):  # Unigram: [token, score] at index id
        model["vocab"] = [entry for old, entry in enumerate(vocab) if old in new_id]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id.get(model["unk_id"])
    else:
        raise DistillError(f"unsupported tokenizer model type {model.get('type')!r}")
    spec["added_tokens"] = [
        {**token, "id": new_id[token["id"]]} for token in spec.get("added_tokens", []) if token["id"] in new_id
    ]
    spec["post_processor"] = None
    spec["padding"] = None
    spec["truncation"] = None
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    if tokenizer.get_vocab_size(with_added_tokens=True) != len(kept):
        raise DistillError("the trimmed tokenizer's size does not match the kept tokens (overlapping ids?)")
    return Vocabulary(tokenizer, [old for old, _ in kept], [tok for _, tok in kept])


def _tokens_by_id(model: dict, added_tokens: list[dict]) -> list[str | None]:
    vocab = model["vocab"]
    pairs = vocab.items() if isinstance(vocab, dict) else ((entry[0], i) for i, entry in enumerate(vocab))
    pairs = list(pairs) + [(token["content"], token["id"]) for token in added_tokens]
    size = max(token_id for _, token_id in pairs) + 1
    by_id: list[str | None] = [None] * size
    for token, token_id in pairs:
        by_id[token_id] = token
    return by_id
