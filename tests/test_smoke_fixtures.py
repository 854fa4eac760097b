from pathlib import Path

from app.encoder import Encoder
from app.model_format import load_model


def test_tiny_model_encodes(tiny_model_dir: Path) -> None:
    encoder = Encoder(load_model(tiny_model_dir))
    vectors = encoder.encode(["the cat sat on the mat", "hello world"])
    assert vectors.shape == (2, 16)
