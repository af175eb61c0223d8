"""Malformed request bodies and messages that cannot be a reason phrase: a 4xx in the spec's JSON, nothing
applied. The parsers on their own, then on a real node."""

from __future__ import annotations

import pytest
import requests

from api.bodies import PARAMS_BODY_LIMIT, merge, parse_body, parse_json
from api.errors import ApiError, reason_phrase

FORM = "application/x-www-form-urlencoded"


def refused(call, *args) -> ApiError:
    with pytest.raises(ApiError) as exc:
        call(*args)
    return exc.value


def test_bodies_are_parsed_whole_or_refused():
    assert parse_body(FORM, {}, b"a=1&b=x%20y&a=2") == {"a": ["1", "2"], "b": "x y"}
    assert parse_body("", {}, b"name=caf%C3%A9") == {"name": "café"}  # no Content-Type: a form
    assert parse_body("application/json", {}, b'{"a": 1, "b": null, "c": ["x"]}') == {"a": 1, "c": ["x"]}
    assert parse_body("text/plain", {}, b"") == {}
    for mimetype, data in [(FORM, b"a=\xff"), (FORM, b"a=%ff"), ("application/json", b'{"a": "\xff"}'),
                           ("application/json", b"[1]"), ("application/json", b'{"a": 1, "a": 2}'),
                           ("application/json", b'{"a": NaN}'), ("application/json", b'{"a": 1e999}'),
                           ("application/json", b'{"a": ' + b"[" * 100_000), ("application/json", b"{"),
                           ("application/json", b'{"a": ' + b"[" * 9 + b"]" * 9 + b"}")]:
        assert refused(parse_body, mimetype, {}, data).status == 400, data[:40]
    assert refused(parse_body, "text/plain", {}, b"a=1").status == 415
    assert parse_json(b'{"a": [[[[[[[1]]]]]]]}') == {"a": [[[[[[[1]]]]]]]}  # depth 8 is still read


def test_multipart_fields_are_strict_and_files_refused():
    def part(name: str, value: bytes, extra: str = "") -> bytes:
        return f'--B\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'.encode() + value + b"\r\n"

    ok = part("a", "é".encode()) + part("b", b"2") + b"--B--\r\n"
    assert parse_body("multipart/form-data", {"boundary": "B"}, ok) == {"a": "é", "b": "2"}
    err = refused(parse_body, "multipart/form-data", {"boundary": "B"},
                  part("a", b"1") + part("f", b"x", '; filename="x"') + b"--B--\r\n")
    assert (err.status, err.errors) == (400, {"f": "file uploads are not accepted here"})
    for options, data in [({"boundary": "B"}, part("a", b"\xff") + b"--B--\r\n"), ({}, ok),
                          ({"boundary": "B"}, part("a", b"1")[:-2])]:
        assert refused(parse_body, "multipart/form-data", options, data).status == 400


def test_a_parameter_given_twice_with_different_values_is_refused():
    assert merge({"vmid": "100"}, {"vmid": "100"}, {"memory": 512}) == {"vmid": "100", "memory": 512}
    err = refused(merge, {"vmid": "100"}, {}, {"vmid": 101})
    assert err.errors == {"vmid": "duplicate parameter (already defined in URI) with conflicting values!"}
    assert set(refused(merge, {}, {"a": "1"}, {"a": "2"}).errors) == {"a"}


def test_reason_phrases_hold_only_printable_latin1():
    assert reason_phrase("role 'No\nSuch' does not exist") == "role 'No\\nSuch' does not exist"
    assert reason_phrase("caf\xe9 \u20ac\r\x00\x7f\x85\t") == "caf\xe9 \\u20ac\\r\\x00\\x7f\\x85\\t"
    assert len(reason_phrase("x" * 1000)) == 256


# ---- on a real node -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guest(single_node):
    s = single_node.session()
    vmid = int(s.get(single_node.url + "/cluster/nextid").json()["data"])
    assert s.post(single_node.url + "/nodes/n1/qemu", data={"vmid": vmid, "name": "body", "memory": 512}).ok
    url = f"{single_node.url}/nodes/n1/qemu/{vmid}/config"
    return s, url, vmid, s.get(url).json()["data"]


def assert_error(r: requests.Response, status: int, errors: set[str] | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/json;charset=UTF-8"
    body = r.json()
    assert body["status"] == status and body["message"] and body["data"] is None
    assert r.reason == reason_phrase(body["message"])
    if errors is not None:
        assert set(body.get("errors", {})) == errors, body
    return body


def test_malformed_bodies_answer_4xx_and_change_nothing(guest):
    s, url, vmid, before = guest
    multipart = (b'--B\r\nContent-Disposition: form-data; name="memory"\r\n\r\n1024\r\n'
                 b'--B\r\nContent-Disposition: form-data; name="description"\r\n\r\nx\xff\r\n--B--\r\n')
    cases = [
        (FORM, b"memory=1024&name=x\xffy", 400),  # one raw byte that is not UTF-8 (was: 200, nothing applied)
        (FORM, b"memory=1024&name=x%FFy", 400),
        (FORM, b"memory=1024&description=" + b"a" * PARAMS_BODY_LIMIT, 413),
        ("application/json", b'{"memory": 1024, "name": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400),
        ("application/json", b'{"memory": 1024, "name": ' + b"[" * 20 + b"]" * 20 + b"}", 400),
        ("application/json", b'[{"memory": 1024}]', 400),
        ("application/json", b'{"memory": 1024, "memory": 2048}', 400),
        ("application/json", b'{"memory": 1024, "balloon": NaN}', 400),
        ("application/json", b'{"memory": 1024, "name": "ok", ', 400),
        ("multipart/form-data; boundary=B", multipart, 400),
        ("multipart/form-data; boundary=B", multipart.replace(b'="description"', b'="f"; filename="f"'), 400),
        ("text/plain", b"memory=1024", 415),
    ]
    for ctype, data, status in cases:
        assert_error(s.put(url, data=data, headers={"Content-Type": ctype}), status)
    # a scalar parameter given an object or an array is refused by name
    assert_error(s.put(url, json={"memory": 1024, "name": {"a": 1}}), 400, {"name"})
    assert_error(s.put(url, json={"memory": [1024, 2048]}), 400, {"memory"})
    # a path parameter contradicted by the body
    assert_error(s.put(url, json={"memory": 1024, "vmid": vmid + 1}), 400, {"vmid"})
    assert s.get(url).json()["data"] == before
    # well-formed bodies still apply: an empty one, a multipart one
    assert s.put(url, data=b"", headers={"Content-Type": FORM}).status_code == 200
    assert s.put(url, data=multipart.replace(b"x\xff", "caf\u00e9 \u20ac".encode()),
                 headers={"Content-Type": "multipart/form-data; boundary=B"}).status_code == 200
    after = s.get(url).json()["data"]
    assert (after["memory"], after["description"]) == (1024, "caf\u00e9 \u20ac")


def test_messages_with_newlines_or_other_text_answer_400_json_naming_the_parameter(single_node):
    s, url = single_node.session(), single_node.url
    r = s.put(url + "/access/acl", data={"path": "/", "roles": "No\nSuch", "users": "root@pam"})
    body = assert_error(r, 400, {"roles"})
    assert body["errors"]["roles"] == "invalid format - role name 'No\nSuch' contains invalid characters"
    r = s.post(url + "/access/users", data={"userid": "nl@pve", "groups": "a\nb"})
    assert assert_error(r, 400, {"groups"})["errors"]["groups"] == \
        "invalid format - group name 'a\nb' contains invalid characters"
    r = s.put(url + "/access/acl", data={"path": "/vms/\u20ac\x7f\n", "roles": "PVEAuditor", "users": "root@pam"})
    assert assert_error(r, 400, {"path"})["errors"]["path"] == "invalid ACL path '/vms/\u20ac\x7f\n'"
    r = s.get(url + "/access/groups", params={"x": "\u20ac\r\n"})
    assert assert_error(r, 400, {"x"})
    # a message that echoes the request's text itself: the reason phrase gets it escaped, the body as it is
    r = s.get(url + "/no-such-\u20ac-\u00e9")
    assert assert_error(r, 404)["message"] == "No 'GET' handler for '/no-such-\u20ac-\u00e9'"
    assert r.reason == "No 'GET' handler for '/no-such-\\u20ac-\u00e9'"
    assert "nl@pve" not in [u["userid"] for u in s.get(url + "/access/users").json()["data"]]
    assert not [e for e in s.get(url + "/access/acl").json()["data"] if "\u20ac" in e["path"]]


def test_a_json_boolean_or_a_nul_for_a_string_parameter_is_refused():
    from api.schema import Param

    for raw in (True, "a\x00b"):
        try:
            Param("comment").coerce(raw)
        except ValueError:
            continue
        raise AssertionError(f"{raw!r} was accepted")
    assert Param("comment").coerce("plain") == "plain"
