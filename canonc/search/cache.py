"""Metric values cached per (configuration, sample), so repeated configurations cost nothing.

A value's key hashes everything it depends on: the model's weights, the benchmark's
inputs, targets and masks, the metric settings and seed (the *context*, fingerprinted
once per run), the configuration, the metric and the sample index. The table lives in
the study's database, so every worker of a study shares it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping

import sqlalchemy as sa
import torch
from sqlalchemy.dialects import postgresql, sqlite

from .db import CACHE
from .space import Config

_CHUNK = 500


def tensor_digest(tensors: Iterable[torch.Tensor], h: hashlib._Hash | None = None) -> hashlib._Hash:
    """Feed the dtype, shape and bytes of each tensor into a sha256 (a new one unless ``h`` is given)."""
    h = h or hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h


def context_fingerprint(model: torch.nn.Module, tensors: Iterable[torch.Tensor], settings: Mapping) -> str:
    """Hex digest of a model's parameters and buffers (by name), data tensors and JSON-able settings."""
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        h.update(name.encode())
        tensor_digest([state[name]], h)
    tensor_digest(tensors, h)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def entry_key(context: str, config: Config, metric: str, index: int) -> str:
    """Cache key of one metric value of one sample under one configuration."""
    return hashlib.sha256(f"{context}|{config.key()}|{metric}|{index}".encode()).hexdigest()


class MetricCache:
    """Key → float store in the study's database (NaN stored as NULL).

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The study's database (:func:`canonc.search.db.connect`).
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def get(self, keys: list[str]) -> dict[str, float]:
        """The cached values among ``keys``."""
        out: dict[str, float] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(keys), _CHUNK):
                rows = conn.execute(sa.select(CACHE.c.key, CACHE.c.value).where(CACHE.c.key.in_(keys[i:i + _CHUNK])))
                out.update({k: math.nan if v is None else float(v) for k, v in rows})
        return out

    def put(self, values: Mapping[str, float]) -> None:
        """Store ``values`` in one transaction; keys already stored (e.g. by another worker) are kept."""
        dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(self.engine.dialect.name)
        rows = [{"key": k, "value": None if math.isnan(v) else float(v)} for k, v in values.items()]
        if not rows:
            return
        with self.engine.begin() as conn:
            for i in range(0, len(rows), _CHUNK):
                chunk = rows[i:i + _CHUNK]
                if dialect is not None:
                    conn.execute(dialect.insert(CACHE).values(chunk).on_conflict_do_nothing())
                    continue
                stored = set(conn.scalars(sa.select(CACHE.c.key).where(CACHE.c.key.in_([r["key"] for r in chunk]))))
                fresh = [r for r in chunk if r["key"] not in stored]
                if fresh:
                    conn.execute(sa.insert(CACHE), fresh)

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(CACHE)))
