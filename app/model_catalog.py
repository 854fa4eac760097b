"""Which model names the server answers to, and what an unknown name gets.

Code written for OpenAI keeps its model name (say ``text-embedding-3-small``) after a
``base_url`` swap, so by default any name is served by the one loaded model and the
response's ``model`` says which model answered. With strict names, only the served name
and the configured aliases are accepted; anything else is OpenAI's 404 ``model_not_found``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.errors import APIError

OWNER = "static-embed"


@dataclass(frozen=True)
class ModelCatalog:
    name: str
    aliases: tuple[str, ...] = ()
    strict: bool = False
    created: int = 0

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.name, *(alias for alias in self.aliases if alias != self.name))

    def resolve(self, requested: str) -> str:
        """The name of the model that answers a request for ``requested``."""
        if requested in self.ids or not self.strict:
            return self.name
        raise APIError(
            404,
            f"The model '{requested}' does not exist. This server serves '{self.name}'"
            + (f" (aliases: {', '.join(self.aliases)})" if self.aliases else "")
            + ".",
            param="model",
            code="model_not_found",
        )

    def model_object(self, model_id: str) -> dict[str, object]:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": OWNER}

    def list_object(self) -> dict[str, object]:
        return {"object": "list", "data": [self.model_object(model_id) for model_id in self.ids]}

    def retrieve_object(self, requested: str) -> dict[str, object]:
        """A known id describes itself; in lenient mode another id describes the model that would answer it."""
        if requested in self.ids:
            return self.model_object(requested)
        return self.model_object(self.resolve(requested))


def served_model_name(configured: str | None, metadata: dict[str, object], model_dir: Path) -> str:
    """EMBED_MODEL_NAME, else the name recorded by the distill job, else the directory's name."""
    if configured:
        return configured
    recorded = metadata.get("name")
    if isinstance(recorded, str) and recorded.strip():
        return recorded.strip()
    return model_dir.resolve().name
