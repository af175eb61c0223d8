"""Rate limits (the spec's defaults) and pagination, on a real node."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
import requests

from tests.harness import Cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def limited_node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("limits")), 1)
    cluster.nodes[0].rate_limits = None  # the defaults: auth 10, read 1000, write 100, bulk 10 per minute
    cluster.start()
    yield cluster.nodes[0]
    cluster.stop()


def test_the_1001st_read_in_a_minute_is_refused_until_the_window_resets(limited_node):
    s = limited_node.session()
    url = limited_node.url + "/version"
    first = s.get(url)
    assert first.headers["X-RateLimit-Limit"] == "1000"
    remaining = int(first.headers["X-RateLimit-Remaining"])
    assert 990 <= remaining <= 999  # root@pam already made a few reads while the node started
    reset = int(first.headers["X-RateLimit-Reset"])
    assert 0 < reset - time.time() <= 61
    for i in range(remaining):
        r = s.get(url)
        assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == str(remaining - i - 1)
    refused = s.get(url)
    assert refused.status_code == 429
    assert refused.json() == {"data": None, "status": 429,
                              "message": f"Rate limit exceeded. Try again in {refused.headers['Retry-After']} seconds."}
    assert refused.headers["X-RateLimit-Remaining"] == "0" and 1 <= int(refused.headers["Retry-After"]) <= 60
    # writes have their own budget
    assert s.post(limited_node.url + "/access/groups", data={"groupid": "g1"}).status_code == 200
    time.sleep(max(0.0, reset - time.time()) + 0.5)
    again = s.get(url)
    assert again.status_code == 200 and again.headers["X-RateLimit-Remaining"] == "999"


def test_failed_logins_are_limited_per_source_and_user(limited_node):
    url = limited_node.url + "/access/ticket"

    def attempt(user: str) -> int:
        return requests.post(url, data={"username": user, "password": "wrong"}, verify=False, timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(attempt, ["mallory@pve"] * 12))
    assert codes.count(401) == 10 and codes.count(429) == 2
    assert attempt("mallory@pve") == 429
    assert attempt("other@pve") == 401  # another user from the same source has its own budget
    ok = requests.post(url, data={"username": "root@pam", "password": limited_node.password}, verify=False)
    assert ok.status_code == 200  # successful logins are not held back


def test_pagination_on_cluster_resources_and_tasks(limited_node):
    px = limited_node.api()
    vmids = []
    for i in range(7):
        vmid = int(px.cluster.nextid.get())
        px.nodes("n1").qemu.create(vmid=vmid, name=f"p{i}")
        vmids.append(vmid)
    s = limited_node.session()
    url = limited_node.url + "/cluster/resources"
    whole = s.get(url, params={"type": "vm"})
    assert len(whole.json()["data"]) == 7 and whole.headers["X-Total-Count"] == "7" and "Link" not in whole.headers
    first = s.get(url, params={"type": "vm", "limit": 3, "sort": "vmid", "order": "desc"})
    assert [r["vmid"] for r in first.json()["data"]] == sorted(vmids, reverse=True)[:3]
    assert first.headers["X-Total-Count"] == "7"
    assert first.headers["Link"] == ('</api2/json/cluster/resources?type=vm&sort=vmid&order=desc&start=3&limit=3>; '
                                     'rel="next", </api2/json/cluster/resources?type=vm&sort=vmid&order=desc&start=6'
                                     '&limit=3>; rel="last"')
    last = s.get(url, params={"type": "vm", "limit": 3, "start": 6, "sort": "vmid", "order": "desc"})
    assert [r["vmid"] for r in last.json()["data"]] == [min(vmids)]
    assert 'rel="next"' not in last.headers["Link"]
    assert s.get(url, params={"limit": 501}).status_code == 400
    assert [r["name"] for r in s.get(url, params={"type": "vm", "sort": "name"}).json()["data"]] == \
        [f"p{i}" for i in range(7)]
    tasks = s.get(limited_node.url + "/nodes/n1/tasks", params={"limit": 2})
    assert len(tasks.json()["data"]) == 2 and tasks.json()["total"] == int(tasks.headers["X-Total-Count"]) >= 7
