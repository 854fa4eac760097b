"""Choose the tokens worth a table row and build the tokenizer the service will use.

Tokens the tokenizer can never produce (BERT's ``[unused…]`` placeholders) are removed
and the remaining ids renumbered, so the table holds one row per id that can occur. The
post-processor is dropped because static pooling adds no ``[CLS]``/``[SEP]``; padding and
truncation are switched off so every token of a text is pooled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Tokenizer

from distill_job.errors import DistillError

DEFAULT_REMOVE_PATTERN = r"\[unused\d+\]"


@dataclass(frozen=True)
class Vocabulary:
    tokenizer: Tokenizer  # the trimmed tokenizer, ids 0..n-1
    teacher_ids: list[int]  # teacher_ids[new_id] is the token's id in the teacher's tokenizer
    tokens: list[str]  # tokens[new_id]
    # Whole words appended after the teacher's tokens: row len(teacher_ids) + i is added_words[i].
    added_words: tuple[str, ...] = ()


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


def supports_extension(vocabulary: Vocabulary) -> bool:
    return json.loads(vocabulary.tokenizer.to_str())["model"].get("type") == "WordPiece"


def extend_vocabulary(vocabulary: Vocabulary, words: Iterable[str], max_new: int) -> Vocabulary:
    """Append up to ``max_new`` of ``words`` (most useful first) as whole-word tokens.

    Only WordPiece vocabularies are extended: WordPiece matches the longest vocabulary
    entry at the start of each word, so a word added to its ``vocab`` is produced as one
    token wherever it occurs, by our tokenizer and by model2vec's alike. A word is added
    when the tokenizer's normalizer and pre-tokenizer keep it as one piece and the
    vocabulary would otherwise split it into several word pieces.
    """
    spec = json.loads(vocabulary.tokenizer.to_str())
    if spec["model"].get("type") != "WordPiece":
        raise DistillError(
            f"--extend-vocab supports WordPiece tokenizers only, this teacher's is {spec['model'].get('type')}"
        )
    vocab: dict[str, int] = spec["model"]["vocab"]
    normalizer, pre_tokenizer = vocabulary.tokenizer.normalizer, vocabulary.tokenizer.pre_tokenizer
    added: list[str] = []
    seen: set[str] = set()
    for raw in words:
        if len(added) >= max_new:
            break
        word = normalizer.normalize_str(raw) if normalizer else raw
        pieces = pre_tokenizer.pre_tokenize_str(word) if pre_tokenizer else [(word, (0, len(word)))]
        if len(pieces) != 1 or pieces[0][0] != word or word in vocab or word in seen:
            continue
        if len(vocabulary.tokenizer.encode(word, add_special_tokens=False).ids) < 2:
            continue
        seen.add(word)
        added.append(word)
    next_id = vocabulary.tokenizer.get_vocab_size(with_added_tokens=True)
    for offset, word in enumerate(added):
        vocab[word] = next_id + offset
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    return Vocabulary(tokenizer, vocabulary.teacher_ids, vocabulary.tokens + added, (*vocabulary.added_words, *added))
