"""Every service, RPC, message, field, enum and enum value in proto/ carries a comment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]

# Field numbers of FileDescriptorProto, DescriptorProto, EnumDescriptorProto, ServiceDescriptorProto: the path
# components protoc uses in SourceCodeInfo.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM = 2, 3, 4
ENUM_VALUE, SERVICE_METHOD = 2, 2


def _descriptor_set(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path / "descriptors.pb"
    protos = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "proto").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", "--include_source_info", f"--descriptor_set_out={out}"]
        + protos,
        cwd=REPO_ROOT,
        check=True,
    )
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def undocumented(file: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """Names of the elements of one .proto file that have no comment."""
    comments = {
        tuple(loc.path): (loc.leading_comments + loc.trailing_comments).strip()
        for loc in file.source_code_info.location
    }
    missing: list[str] = []

    def check(path: tuple[int, ...], what: str) -> None:
        if not comments.get(path):
            missing.append(f"{file.name}: {what}")

    def walk_enum(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], prefix: str) -> None:
        check(path, f"enum {prefix}{enum.name}")
        for i, value in enumerate(enum.value):
            check((*path, ENUM_VALUE, i), f"enum value {prefix}{enum.name}.{value.name}")

    def walk_message(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str) -> None:
        name = f"{prefix}{message.name}"
        check(path, f"message {name}")
        for i, field in enumerate(message.field):
            check((*path, MESSAGE_FIELD, i), f"field {name}.{field.name}")
        for i, nested in enumerate(message.nested_type):
            walk_message(nested, (*path, MESSAGE_NESTED, i), f"{name}.")
        for i, enum in enumerate(message.enum_type):
            walk_enum(enum, (*path, MESSAGE_ENUM, i), f"{name}.")

    for i, message in enumerate(file.message_type):
        walk_message(message, (FILE_MESSAGE, i), "")
    for i, enum in enumerate(file.enum_type):
        walk_enum(enum, (FILE_ENUM, i), "")
    for i, service in enumerate(file.service):
        check((FILE_SERVICE, i), f"service {service.name}")
        for j, method in enumerate(service.method):
            check((FILE_SERVICE, i, SERVICE_METHOD, j), f"rpc {service.name}.{method.name}")
    return missing


def test_everything_is_commented(tmp_path: Path) -> None:
    missing = [name for file in _descriptor_set(tmp_path).file for name in undocumented(file)]
    assert not missing, "add a comment to: " + ", ".join(missing)


def test_the_check_finds_a_missing_comment(tmp_path: Path) -> None:
    file = _descriptor_set(tmp_path).file[0]
    del file.source_code_info.location[:]
    assert undocumented(file)


def test_one_request_response_pair_per_rpc(tmp_path: Path) -> None:
    for file in _descriptor_set(tmp_path).file:
        for service in file.service:
            for method in service.method:
                assert method.input_type == f".fashionsearch.v1.{method.name}Request", method.name
                assert method.output_type == f".fashionsearch.v1.{method.name}Response", method.name
