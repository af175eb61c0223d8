"""The committed Python modules of proto/gpve/v1 are what grpcio-tools makes of the .proto files, and the
.proto files follow the protobuf style guide: every service, method, message, field and enum value commented,
enums prefixed and starting at an UNSPECIFIED zero, names in the guide's case."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

from api.rpc.pb import PROTO_DIR

PROTOS = sorted(glob.glob(os.path.join(PROTO_DIR, "gpve", "v1", "*.proto")))


def test_generated_modules_match_the_proto_files(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) generates the stubs")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", *PROTOS], check=True)
    made = sorted(os.path.relpath(p, tmp_path) for p in glob.glob(str(tmp_path / "gpve" / "v1" / "*_pb2*.py")))
    committed = sorted(os.path.relpath(p, PROTO_DIR) for p in glob.glob(os.path.join(PROTO_DIR, "gpve", "v1",
                                                                                       "*_pb2*.py")))
    assert made == committed
    for name in made:
        with open(tmp_path / name) as fresh, open(os.path.join(PROTO_DIR, name)) as old:
            assert fresh.read() == old.read(), f"{name} is stale: run scripts/gen_proto.sh"


def _declarations(text: str):
    """(kind, name, commented) for every service, rpc, message, enum, field and enum value."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        commented = i > 0 and lines[i - 1].strip().startswith("//")
        m = re.match(r"(service|rpc|message|enum)\s+(\w+)", stripped)
        if m:
            yield m.group(1), m.group(2), commented
            continue
        m = re.match(r"(?:optional\s+|repeated\s+)?(map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*(\d+);", stripped)
        if m:
            yield "field", m.group(2), commented
            continue
        m = re.match(r"([A-Z][A-Z0-9_]*)\s*=\s*(\d+);", stripped)
        if m:
            yield "value", m.group(1), commented


@pytest.mark.parametrize("path", PROTOS, ids=os.path.basename)
def test_proto_files_follow_the_style_guide(path):
    with open(path) as f:
        text = f.read()
    assert "package gpve.v1;" in text and 'syntax = "proto3";' in text
    declared = list(_declarations(text))
    assert declared
    uncommented = [(kind, name) for kind, name, commented in declared if not commented]
    assert not uncommented, f"without a comment: {uncommented}"
    for kind, name, _ in declared:
        if kind in ("service", "message", "enum", "rpc"):
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", name), name
        elif kind == "field":
            assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
    for enum, body in re.findall(r"enum (\w+) \{(.*?)\}", text, re.S):
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum).upper().replace("V_CLUSTER", "VCLUSTER") + "_"
        values = re.findall(r"([A-Z][A-Z0-9_]*) = (\d+);", body)
        assert values[0] == (prefix + "UNSPECIFIED", "0"), enum
        assert all(v.startswith(prefix) for v, _ in values), enum
    for message, body in re.findall(r"message (\w+) \{(.*?)\n\}", text, re.S):
        numbers = re.findall(r"= (\d+);", body)
        assert len(numbers) == len(set(numbers)), f"{message} uses a field number twice"
