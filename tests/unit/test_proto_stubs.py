"""The committed Python stubs of proto/ are what grpcio-tools generates from the .proto files today (`make proto`)."""

from __future__ import annotations

import re
from pathlib import Path

from proto.generate import ROOT, generate, outputs

# Lines that carry the generator's version rather than anything of the .proto: a newer grpcio-tools changes them
# without making the committed stubs stale.
_VERSION_LINES = re.compile(
    r"^# Protobuf Python Version: .*$"
    r"|^GRPC_GENERATED_VERSION = .*$"
    r"|_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)",
    re.M,
)


def _normalized(path: Path) -> str:
    return _VERSION_LINES.sub("<version>", path.read_text(encoding="utf-8"))


def test_committed_stubs_are_current(tmp_path: Path):
    fresh = generate(tmp_path)
    committed = outputs(ROOT)
    assert [p.relative_to(tmp_path) for p in fresh] == [p.relative_to(ROOT) for p in committed]
    for new, old in zip(fresh, committed, strict=True):
        assert old.exists(), f"{old} is missing: run `make proto`"
        assert _normalized(new) == _normalized(old), f"{old.relative_to(ROOT)} is stale: run `make proto`"


def test_stubs_define_the_picker_service():
    from proto.autonomic.picker.v1 import picker_pb2

    service = picker_pb2.DESCRIPTOR.services_by_name["Picker"]
    assert service.full_name == "autonomic.picker.v1.Picker"
    assert [m.name for m in service.methods] == ["Pick", "Complete", "Explain"]
