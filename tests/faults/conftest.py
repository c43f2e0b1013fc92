"""The `cluster` fixture: real nodes with daemons, every daemon stopped at teardown (the
Syncthings are stopped by `syncthing_factory`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.cluster import Cluster, make_cluster


@pytest.fixture
def cluster(node_factory, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(n: int = 3, **traces: int) -> Cluster:
        made.append(make_cluster(node_factory, tmp_path, n, **traces))
        return made[-1]

    yield make
    for c in made:
        c.stop_all()
