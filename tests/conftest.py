from __future__ import annotations

import pytest

from tests.harness import Cluster


@pytest.fixture(scope="module")
def single_node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("single")), 1).start()
    yield cluster.nodes[0]
    cluster.stop()


@pytest.fixture
def three_nodes(tmp_path):
    cluster = Cluster(str(tmp_path), 3).start()
    yield cluster
    cluster.stop()
