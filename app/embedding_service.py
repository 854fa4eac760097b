"""From validated requests to vectors: limits, batching and the encoder, without HTTP.

A batch tokenizes all its texts in one tokenizer call, checks each request's token
limits on its own (one request over a limit fails alone, never its batch-mates), then
embeds the accepted requests together, one encoder call per distinct ``dimensions``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.batching import Batcher, BatcherStopped, QueueFull
from app.embedding_request import EmbeddingRequest
from app.encoder import Encoder, TokenBatch
from app.errors import SERVER_ERROR, APIError, invalid_request
from app.metrics import Metrics

# Batches up to this size estimate (characters of text, or token ids) are encoded on the
# event loop: about 60 sentences, well under a millisecond of work (app.batching).
MAX_INLINE_SIZE = 4096


@dataclass(frozen=True)
class TokenLimits:
    max_input_tokens: int
    max_request_tokens: int
    truncate: bool


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: np.ndarray  # float32, one unit row per input (zero row for an input with no known token)
    prompt_tokens: int


class EmbeddingService:
    """Owns the batcher for one encoder; ``embed`` is what the route awaits."""

    def __init__(
        self,
        encoder: Encoder,
        limits: TokenLimits,
        metrics: Metrics,
        *,
        max_batch_inputs: int,
        max_batch_tokens: int,
        max_queue_inputs: int,
    ) -> None:
        self.encoder = encoder
        self.limits = limits
        self.metrics = metrics
        self.batcher: Batcher[EmbeddingRequest, EmbeddingResult] = Batcher(
            self.encode_batch,
            max_batch_inputs=max_batch_inputs,
            max_batch_tokens=max_batch_tokens,
            max_queue_inputs=max_queue_inputs,
            process_inline=self.encode_small_batch,
            max_inline_size=MAX_INLINE_SIZE,
            observer=self,
        )

    def queue_changed(self, delta: int) -> None:
        self.metrics.queue_inputs.inc(delta)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        try:
            return await self.batcher.submit(request, inputs=request.input_count, tokens=request.size_estimate)
        except QueueFull as exc:
            raise APIError(
                429,
                f"The server is busy ({exc.queued_inputs} inputs are waiting to be embedded). "
                f"Retry after {exc.retry_after} s.",
                type="rate_limit_exceeded",
                code="queue_full",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None
        except BatcherStopped:
            raise APIError(
                503,
                "The server is shutting down; retry on another instance.",
                type=SERVER_ERROR,
                code="not_ready",
                headers={"Retry-After": "1"},
            ) from None

    def encode_small_batch(self, requests: Sequence[EmbeddingRequest]) -> list[EmbeddingResult | BaseException]:
        """``encode_batch`` for a small batch run on the event loop: tokenized on this thread too."""
        return self.encode_batch(requests, parallel=False)

    def encode_batch(
        self, requests: Sequence[EmbeddingRequest], parallel: bool = True
    ) -> list[EmbeddingResult | BaseException]:
        """Run in the encoder thread: one tokenizer call, per-request limits, one embed per ``dimensions``."""
        started = time.perf_counter()
        tokenized = self._tokenize(requests, parallel)
        outcomes: list[EmbeddingResult | BaseException] = []
        accepted: dict[int | None, list[int]] = {}
        for position, batch in enumerate(tokenized):
            try:
                tokenized[position] = self._apply_limits(batch)
            except APIError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(EmbeddingResult(np.empty((0, 0), np.float32), tokenized[position].total_tokens))
            accepted.setdefault(requests[position].dimensions, []).append(position)

        inputs = tokens = 0
        for dimensions, positions in accepted.items():
            group = _concatenate([tokenized[p] for p in positions])
            vectors = self.encoder.embed(group, dimensions)
            start = 0
            for position in positions:
                count = len(tokenized[position].lengths)
                done = outcomes[position]
                assert isinstance(done, EmbeddingResult)
                outcomes[position] = EmbeddingResult(vectors[start : start + count], done.prompt_tokens)
                start += count
            inputs += len(group.lengths)
            tokens += group.total_tokens
        self.metrics.inputs.inc(inputs)
        self.metrics.tokens.inc(tokens)
        self.metrics.batch_inputs.observe(sum(r.input_count for r in requests))
        self.metrics.encode_seconds.observe(time.perf_counter() - started)
        return outcomes

    def _tokenize(self, requests: Sequence[EmbeddingRequest], parallel: bool) -> list[TokenBatch]:
        texts = [text for request in requests if request.texts is not None for text in request.texts]
        all_texts = self.encoder.tokenize(texts, parallel=parallel) if texts else None
        text_starts = None if all_texts is None else np.concatenate(([0], np.cumsum(all_texts.lengths)))
        batches: list[TokenBatch] = []
        next_text = 0
        for request in requests:
            if request.texts is None:
                batches.append(TokenBatch.from_id_lists(request.token_ids or []))
                continue
            assert all_texts is not None and text_starts is not None
            first, last = next_text, next_text + len(request.texts)
            ids = all_texts.ids[text_starts[first] : text_starts[last]]
            batches.append(TokenBatch(ids, all_texts.lengths[first:last]))
            next_text = last
        return batches

    def _apply_limits(self, batch: TokenBatch) -> TokenBatch:
        limits = self.limits
        longest = int(batch.lengths.max())
        if longest > limits.max_input_tokens:
            if not limits.truncate:
                index = int(np.argmax(batch.lengths > limits.max_input_tokens))
                raise invalid_request(
                    f"input[{index}] has {int(batch.lengths[index])} tokens; the maximum per input is "
                    f"{limits.max_input_tokens}. Shorten it or split it into several inputs.",
                    param=f"input[{index}]",
                    code="context_length_exceeded",
                )
            batch = batch.truncate(limits.max_input_tokens)
        total = batch.total_tokens
        if total > limits.max_request_tokens:
            raise invalid_request(
                f"This request has {total} tokens in total; the maximum per request is {limits.max_request_tokens}. "
                "Send the inputs in several requests.",
                param="input",
                code="max_tokens_per_request",
            )
        return batch


def _concatenate(batches: list[TokenBatch]) -> TokenBatch:
    if len(batches) == 1:
        return batches[0]
    return TokenBatch(np.concatenate([b.ids for b in batches]), np.concatenate([b.lengths for b in batches]))
