"""Fixtures for the codec's tests: a spool with encrypted synthetic objects, data-centre
keys, and ObjectReceived events that describe the objects as the gateway would."""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from trailerlink_crypto.atrest import SpoolKey, encrypt_to_file
from trailerlink_events.messages import ObjectIdentity, ObjectReceived, new_meta, timestamp
from trailerlink_sealed import OpeningKey
from trailerlink_sealed.testdata import MGSpec, mg_file_bytes


def dataset_offset(part10: bytes) -> int:
    """Where the dataset starts: after the File Meta group (its group length says)."""
    assert part10[128:132] == b"DICM" and part10[132:136] == b"\x02\x00\x00\x00"
    (group_length,) = struct.unpack("<I", part10[140:144])
    return 144 + group_length


@dataclass
class SpoolObject:
    data: bytes
    spool_path: str
    spec: MGSpec

    def event(self, trailer_id: str) -> ObjectReceived:
        offset = dataset_offset(self.data)
        return ObjectReceived(
            meta=new_meta("gateway", trailer_id),
            object=ObjectIdentity(
                study_instance_uid=self.spec.study_uid,
                series_instance_uid=self.spec.series_uid,
                sop_instance_uid=self.spec.sop_uid,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
                transfer_syntax_uid=self.spec.transfer_syntax,
            ),
            calling_ae_title="MG1",
            file_size_bytes=len(self.data),
            file_sha256=hashlib.sha256(self.data).hexdigest(),
            dataset_size_bytes=len(self.data) - offset,
            dataset_sha256=hashlib.sha256(self.data[offset:]).hexdigest(),
            spool_path=self.spool_path,
            received_at=timestamp(),
            number_of_frames=self.spec.frames,
        )


@dataclass
class Spool:
    root: Path
    key: SpoolKey

    def put(self, spec: MGSpec) -> SpoolObject:
        """Encrypt a synthetic object into the spool, laid out like the gateway's."""
        data = mg_file_bytes(spec)
        rel = f"objects/20260101/{spec.sop_uid}.{uuid.uuid4().hex[:16]}.tlspool"
        encrypt_to_file(self.root / rel, [data], self.key)
        return SpoolObject(data, rel, spec)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    root = tmp_path / "spool"
    root.mkdir()
    return Spool(root, SpoolKey.generate())


@pytest.fixture(scope="session")
def dc_key() -> OpeningKey:
    return OpeningKey.generate()


@pytest.fixture
def public_keys_dir(tmp_path: Path, dc_key: OpeningKey) -> Path:
    directory = tmp_path / "sealing-keys"
    directory.mkdir()
    (directory / "dc.pem").write_bytes(dc_key.recipient.to_pem())
    return directory
