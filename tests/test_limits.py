"""Rate limits (the spec's defaults) and pagination, on a real node."""

from __future__ import annotations

import concurrent.futures
import os
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


def test_only_refused_credentials_count_against_the_login_budget(limited_node):
    url = limited_node.url + "/access/ticket"

    def attempt(**data) -> requests.Response:
        return requests.post(url, data={"username": "eve@pve", **data}, verify=False, timeout=30)

    for _ in range(12):  # refused for want of a password: no verdict on the credentials
        refused = attempt()
        assert refused.status_code == 400 and refused.json()["errors"] == {
            "password": "property is missing and it is not optional"}
        assert refused.headers["X-RateLimit-Remaining"] == "10"
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = [r.status_code for r in pool.map(lambda _: attempt(password="wrong"), range(12))]
    assert codes.count(401) == 10 and codes.count(429) == 2


def test_a_client_polling_the_login_from_the_start_is_in_within_3s_and_never_limited(tmp_path):
    """`make run` and a script right after: the port may open before the node can log anyone in; it holds such
    a request until it can answer (a lone node elects itself at once), and no refusal in between counts as a
    failed login (the defaults: 10 failed logins a minute)."""
    node = Cluster(str(tmp_path), 1).nodes[0]
    node.rate_limits = None
    started = time.monotonic()
    node.start()
    seen, session = [], requests.Session()
    session.verify, session.trust_env = False, False
    try:
        while time.monotonic() - started < 15:
            try:
                with open(os.path.join(node.data_dir, "root-password")) as f:
                    password = f.read().strip()
                r = session.post(node.url + "/access/ticket", data={"username": "root@pam", "password": password},
                                 timeout=15)
            except (OSError, requests.ConnectionError):  # no password file yet, or the port is not open
                time.sleep(0.05)
                continue
            seen.append((round(time.monotonic() - started, 2), r.status_code))
            if r.status_code == 200:
                break
            time.sleep(0.05)
    finally:
        node.stop()
    assert seen and seen[-1][1] == 200 and seen[-1][0] < 3.0, seen
    assert 429 not in [code for _, code in seen], seen


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
