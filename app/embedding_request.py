"""Validate a decoded ``POST /v1/embeddings`` body into a typed request, or say what is wrong.

Hand-written rather than a pydantic model: the four ``input`` forms need exact,
index-naming messages (as OpenAI gives), and token-id arrays of thousands of ints are
checked faster here than through a generic union validator. Nothing here tokenizes;
token limits are checked later, once the batch is tokenized.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import invalid_request

ENCODING_FORMATS = ("float", "base64")
KNOWN_FIELDS = ("input", "model", "encoding_format", "dimensions", "user")


@dataclass(frozen=True)
class EmbeddingRequest:
    """A request whose shape is valid; either ``texts`` or ``token_ids`` is set."""

    model: str
    texts: list[str] | None
    token_ids: list[list[int]] | None
    encoding_format: str
    dimensions: int | None

    @property
    def input_count(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.token_ids or ())

    @property
    def size_estimate(self) -> int:
        """Tokens this request may hold, known before tokenizing (characters bound WordPiece tokens)."""
        if self.texts is not None:
            return sum(map(len, self.texts))
        return sum(map(len, self.token_ids or ()))


def parse_embedding_request(body: object, *, max_inputs: int, vocab_size: int, width: int) -> EmbeddingRequest:
    """Check the body's fields and types; raise a 400 ``APIError`` naming the offending parameter."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object with 'input' and 'model'.")
    for name in body:
        if name not in KNOWN_FIELDS:
            raise invalid_request(f"Unrecognized request argument supplied: {name}", param=str(name))
    if "model" not in body:
        raise invalid_request("You must provide a model parameter.", param="model")
    model = body["model"]
    if not isinstance(model, str):
        raise invalid_request(f"'model' must be a string, got {_json_type(model)}.", param="model")
    if "input" not in body:
        raise invalid_request("You must provide an input parameter.", param="input")
    texts, token_ids = _parse_input(body["input"], max_inputs=max_inputs, vocab_size=vocab_size)

    encoding_format = body.get("encoding_format", "float")
    if encoding_format not in ENCODING_FORMATS:
        raise invalid_request(
            f"Invalid value for 'encoding_format': {_shown(encoding_format)}; "
            "supported values are 'float' and 'base64'.",
            param="encoding_format",
        )
    dimensions = body.get("dimensions")
    if "dimensions" in body:
        if type(dimensions) is not int:
            raise invalid_request(f"'dimensions' must be an integer, got {_json_type(dimensions)}.", param="dimensions")
        if not 1 <= dimensions <= width:
            raise invalid_request(
                f"Invalid value for 'dimensions': {dimensions}; this model supports 1 to {width} dimensions.",
                param="dimensions",
            )
    if "user" in body and not isinstance(body["user"], str):
        raise invalid_request(f"'user' must be a string, got {_json_type(body['user'])}.", param="user")
    return EmbeddingRequest(model, texts, token_ids, encoding_format, dimensions)


def _parse_input(value: object, *, max_inputs: int, vocab_size: int) -> tuple[list[str] | None, list[list[int]] | None]:
    if isinstance(value, str):
        if not value:
            raise invalid_request("'input' cannot be an empty string.", param="input")
        return [value], None
    if not isinstance(value, list):
        raise invalid_request(
            f"'input' must be a string, an array of strings, an array of token ids or an array of token-id arrays, "
            f"got {_json_type(value)}.",
            param="input",
        )
    if not value:
        raise invalid_request("'input' cannot be an empty array.", param="input")
    if len(value) > max_inputs:
        raise invalid_request(
            f"'input' has {len(value)} items; at most {max_inputs} inputs are allowed per request.", param="input"
        )
    first = value[0]
    if isinstance(first, str):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise invalid_request(
                    f"input[{index}] must be a string like the other items, got {_json_type(item)}.",
                    param=f"input[{index}]",
                )
            if not item:
                raise invalid_request(f"input[{index}] cannot be an empty string.", param=f"input[{index}]")
        return value, None
    if type(first) is int:
        _check_ids(value, "input", vocab_size)
        return None, [value]
    if isinstance(first, list):
        for index, item in enumerate(value):
            where = f"input[{index}]"
            if not isinstance(item, list):
                raise invalid_request(
                    f"{where} must be an array of token ids like the other items, got {_json_type(item)}.", param=where
                )
            if not item:
                raise invalid_request(f"{where} cannot be an empty array of token ids.", param=where)
            _check_ids(item, where, vocab_size)
        return None, value
    raise invalid_request(
        f"input[0] must be a string, a token id or an array of token ids, got {_json_type(first)}.", param="input[0]"
    )


def _check_ids(ids: list[object], where: str, vocab_size: int) -> None:
    """Token ids are this model's tokenizer ids: integers in 0..vocab_size-1."""
    if all(type(token) is int for token in ids):
        low, high = min(ids), max(ids)  # type: ignore[type-var]
        if low >= 0 and high < vocab_size:
            return
    for position, token in enumerate(ids):
        if type(token) is not int:
            raise invalid_request(
                f"{where}[{position}] must be an integer token id, got {_json_type(token)}.", param=where
            )
        if not 0 <= token < vocab_size:
            raise invalid_request(
                f"{where}[{position}] is token id {token}, outside this model's vocabulary (0 to {vocab_size - 1}). "
                "Token ids must come from this model's tokenizer, not tiktoken.",
                param=where,
            )


def _shown(value: object) -> str:
    """A value as the client wrote it in JSON (a string quoted, null as null)."""
    return repr(value) if isinstance(value, str) else _json_type(value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
