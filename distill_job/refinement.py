"""Fit the static table to the teacher's sentence embeddings of a corpus (after tokenlearn).

The token pass gives every token the teacher's view of it alone; a text's static vector
is then the mean of its tokens' rows, which is not what the teacher makes of the text.
This stage trains the rows, and one linear map applied after the mean, so that the mean
of a text's rows points where the teacher's own embedding of that text points (cosine
loss). The map commutes with the mean, so it is folded into the table at the end: the
output is a plain table the service and model2vec use unchanged.

The targets are the teacher's embeddings projected onto their top ``d`` singular
directions (uncentred, so cosines between them are kept as well as ``d`` dimensions
allow). Columns therefore stay ordered by how much of the teacher they carry, which keeps
the service's truncation to the first ``k`` dimensions meaningful. A held-out part of
the corpus picks the best epoch and stops training when it no longer improves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from app.encoder import TokenBatch
from distill_job.errors import DistillError

_CHUNK = 8192


@dataclass(frozen=True)
class RefineSettings:
    epochs: int = 10  # an upper bound: on WordNet the held-out texts stop improving after 7
    batch_size: int = 256
    learning_rate: float = 0.01  # Adam step, relative to the table's root-mean-square value
    validation_fraction: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class RefineReport:
    texts: int
    validation_texts: int
    epochs_run: int
    best_epoch: int  # 0: the untrained table (with its fitted map) was best
    validation_cosine: list[float]  # per epoch, index 0 before training
    seconds: float


def refine_table(
    table: np.ndarray,
    tokens: TokenBatch,
    targets: np.ndarray,
    settings: RefineSettings = RefineSettings(),
    progress: bool = True,
) -> tuple[np.ndarray, RefineReport]:
    """The refined float32 table (same shape) and what training saw and reached."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small steps: a second thread only adds waits, worse on a busy machine (2.5x)
    try:
        return _refine(table, tokens, targets, settings, progress)
    finally:
        torch.set_num_threads(threads)


def _refine(
    table: np.ndarray, tokens: TokenBatch, targets: np.ndarray, settings: RefineSettings, progress: bool
) -> tuple[np.ndarray, RefineReport]:
    import torch

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(settings.seed)
    keep = np.flatnonzero(tokens.lengths > 0)  # texts with no known token teach nothing
    if len(keep) < 2:
        raise DistillError("the refinement corpus needs at least 2 texts with tokens the model knows")
    offsets = np.concatenate([[0], np.cumsum(tokens.lengths)]).astype(np.int64)
    goal = torch.from_numpy(_reduce_targets(targets[keep], table.shape[1]))
    shuffled_rows = torch.randperm(len(keep), generator=generator).numpy()  # rows of goal / texts
    n_validation = max(1, int(len(keep) * settings.validation_fraction))
    validation, training = shuffled_rows[:n_validation], shuffled_rows[n_validation:]
    texts = [(int(offsets[i]), int(offsets[i + 1])) for i in keep]
    ids = torch.from_numpy(tokens.ids.astype(np.int64))

    def bag(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        spans = [texts[r] for r in rows]
        flat = torch.cat([ids[a:b] for a, b in spans])
        starts = torch.tensor(np.cumsum([0] + [b - a for a, b in spans[:-1]]), dtype=torch.long)
        return flat, starts

    rows = torch.nn.EmbeddingBag.from_pretrained(
        torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32)), freeze=False, mode="mean", sparse=True
    )
    mapping = torch.nn.Linear(table.shape[1], table.shape[1], bias=False)
    with torch.no_grad():
        mapping.weight.copy_(_fitted_map(rows, bag, training, goal).T)

    def validation_cosine() -> float:
        with torch.no_grad():
            flat, starts = bag(validation)
            return float(torch.nn.functional.cosine_similarity(mapping(rows(flat, starts)), goal[validation]).mean())

    scale = float(np.sqrt(np.mean(np.square(table, dtype=np.float64))))
    row_optimizer = torch.optim.SparseAdam(list(rows.parameters()), lr=settings.learning_rate * scale)
    map_optimizer = torch.optim.Adam(mapping.parameters(), lr=settings.learning_rate * 0.1)
    history = [validation_cosine()]
    best = (history[0], 0, rows.weight.detach().clone(), mapping.weight.detach().clone())
    epochs_run = 0
    for epoch in range(1, settings.epochs + 1):
        shuffled = training[torch.randperm(len(training), generator=generator).numpy()]
        batches = range(0, len(shuffled), settings.batch_size)
        for start in tqdm(batches, desc=f"Refining, epoch {epoch}", unit="batch", disable=not progress):
            part = shuffled[start : start + settings.batch_size]
            flat, starts = bag(part)
            loss = 1 - torch.nn.functional.cosine_similarity(mapping(rows(flat, starts)), goal[part]).mean()
            row_optimizer.zero_grad()
            map_optimizer.zero_grad()
            loss.backward()
            row_optimizer.step()
            map_optimizer.step()
        epochs_run = epoch
        history.append(validation_cosine())
        if history[-1] > best[0]:
            best = (history[-1], epoch, rows.weight.detach().clone(), mapping.weight.detach().clone())
        else:
            break  # held-out texts got worse: the rows started to fit the training texts only
    _, best_epoch, best_rows, best_map = best
    refined = (best_rows @ best_map.T).numpy().astype(np.float32)
    report = RefineReport(
        texts=len(keep),
        validation_texts=n_validation,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        validation_cosine=[round(c, 5) for c in history],
        seconds=time.perf_counter() - started,
    )
    return refined, report


def _reduce_targets(targets: np.ndarray, dims: int) -> np.ndarray:
    """Targets on their top ``dims`` right singular directions (uncentred), float32.

    The directions are the top eigenvectors of the small ``targets.T @ targets``, so no
    copy of the whole target matrix is made on the way.
    """
    if dims >= targets.shape[1]:
        return np.ascontiguousarray(targets, dtype=np.float32)
    gram = np.zeros((targets.shape[1], targets.shape[1]), dtype=np.float64)
    for start in range(0, len(targets), _CHUNK):
        part = targets[start : start + _CHUNK].astype(np.float64)
        gram += part.T @ part
    _, vectors = np.linalg.eigh(gram)  # ascending eigenvalues
    directions = vectors[:, ::-1][:, :dims]
    return (targets @ directions.astype(np.float32)).astype(np.float32)


def _fitted_map(rows: object, bag: object, training: np.ndarray, goal: object) -> object:
    """Least-squares map from unit mean vectors to targets: a start where the loss is already low.

    Solved from the normal equations, summed chunk by chunk, to keep memory small.
    """
    import torch

    dims = goal.shape[1]
    gram = torch.zeros((dims, dims), dtype=torch.float64)
    cross = torch.zeros((dims, dims), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(training), _CHUNK):
            part = training[start : start + _CHUNK]
            means = torch.nn.functional.normalize(rows(*bag(part)).double(), dim=-1)
            gram += means.T @ means
            cross += means.T @ goal[part].double()
        ridge = 1e-6 * torch.trace(gram) / dims  # keeps the solve defined when some directions are unused
        return torch.linalg.solve(gram + ridge * torch.eye(dims, dtype=torch.float64), cross).float()
