"""PCA and token weighting: turn raw teacher outputs into the static table.

PCA (fitted on all token vectors, centred) keeps the ``pca_dims`` directions of most
variance, ordered by it, which is what lets the service truncate to fewer dimensions.

Token weighting follows SIF (Arora et al., 2017): a token of probability ``p`` is scaled
by ``a / (a + p)``, so frequent tokens count less in a text's mean. Without a corpus,
``p`` is estimated from the token's rank with Zipf's law, ``p(r) ∝ 1 / (r + 1)`` for the
token with the r-th smallest id (1-based), the ids of WordPiece and BPE vocabularies
being roughly in order of frequency; this is model2vec's estimate too.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SIF_COEFFICIENT = 1e-4


def fit_pca(vectors: np.ndarray, dims: int, drop_top: int = 0, whiten: float = 0.0) -> np.ndarray:
    """Project onto principal components ``drop_top .. drop_top + dims`` (sign fixed for reproducibility).

    ``drop_top`` skips the components of most variance ("all-but-the-top", Mu & Viswanath
    2018), which in token tables mostly encode what all tokens share. ``whiten`` divides
    each kept column by its standard deviation to that power: 0 keeps PCA's scale, 1 is
    full whitening. Any power below 1 keeps the columns in order of variance, so the
    service can still truncate to the first k.
    """
    from sklearn.decomposition import PCA

    total = dims + drop_top
    pca = PCA(n_components=total, svd_solver="full", random_state=0)
    projected = pca.fit_transform(vectors.astype(np.float64))[:, drop_top:]
    signs = np.sign(projected[np.abs(projected).argmax(axis=0), np.arange(dims)])
    signs[signs == 0] = 1.0
    projected *= signs
    if whiten:
        projected /= np.maximum(projected.std(axis=0), 1e-12) ** whiten
    return projected.astype(np.float32)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Scale every token vector to length 1, so PCA sees directions, not the teacher's norms."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def zipf_probabilities(n_tokens: int) -> np.ndarray:
    inverse_rank = 1.0 / np.arange(2, n_tokens + 2, dtype=np.float64)
    return inverse_rank / inverse_rank.sum()


def sif_weights(probabilities: np.ndarray, coefficient: float = DEFAULT_SIF_COEFFICIENT) -> np.ndarray:
    return (coefficient / (coefficient + probabilities)).astype(np.float32)
