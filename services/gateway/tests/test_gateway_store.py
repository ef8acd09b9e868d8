"""The gateway as a real process, with dcmtk as the modality and the real broker:
what a success means (durable, encrypted, byte-exact, announced once), and that
everything it refuses is refused clearly without disturbing anyone else."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread
from trailerlink_crypto.atrest import decrypt_to_bytes
from trailerlink_events.messages import ObjectReceived
from trailerlink_events.topics import OBJECT_RECEIVED
from trailerlink_spool.part10 import dataset_offset
from trailerlink_testing.dicom import (
    CT_IMAGE_STORAGE,
    HOLOGIC_COLUMNS,
    HOLOGIC_ROWS,
    dataset_bytes,
    write_study,
    write_synthetic,
)
from trailerlink_testing.ports import free_port
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka

# pydicom's real files, with the storescu option that proposes their transfer syntax.
REAL_FILES = {
    "SC_rgb_rle.dcm": ["-xr"],
    "image_dfl.dcm": ["-xd"],
    "test-SR.dcm": [],
    "reportsi.dcm": [],
    "SC_rgb_small_odd_big_endian.dcm": ["-xb"],
    "SC_rgb_jpeg_dcmd.dcm": ["-xi"],
    "JPEG2000.dcm": ["-xw"],
    "GDCMJ2K_TextGBR.dcm": ["-xv"],
    "JPGExtended.dcm": ["-xx"],
}


def _expect_stored(
    gateway, source: Path, topic_events_by_sop: Counter, wire_copy: Path | None = None
) -> None:
    """``wire_copy``: what dcmtk storescp +B (bit-preserving) received of the same send."""
    raw = (wire_copy or source).read_bytes()
    ds = dcmread(source, stop_before_pixels=True)
    sent = raw[dataset_offset(raw) :]
    [copy] = gateway.index().copies(ds.SOPInstanceUID)
    stored = gateway.layout.resolve(copy.spool_path)
    on_disk = stored.read_bytes()
    # Not plaintext: no Part 10 signature where it would stand, and no run of the sent
    # bytes (a bare b"DICM" anywhere would turn up by chance in ~0.6 % of 27 MB of
    # ciphertext, so 256-byte windows are what is looked for).
    middle = len(sent) // 2
    assert on_disk[128:132] != b"DICM", "spool file is plaintext"
    assert sent[:256] not in on_disk and sent[middle : middle + 256] not in on_disk, (
        "spool file holds plaintext dataset bytes"
    )
    plain = decrypt_to_bytes(stored, gateway.keyring)
    received = plain[dataset_offset(plain) :]
    assert copy.dataset_sha256 == hashlib.sha256(received).hexdigest()
    assert received == sent, "stored data set differs from the one sent"
    assert copy.file_sha256 == hashlib.sha256(plain).hexdigest()
    assert copy.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert topic_events_by_sop[ds.SOPInstanceUID] == 1


@pytest.fixture
def wire_recorder(tmp_path: Path):
    """dcmtk storescp in bit-preserving mode: an independent record of the bytes storescu
    puts on the wire (storescu re-encodes some files, e.g. it re-deflates)."""
    out = tmp_path / "storescp"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        ["storescp", "+B", "+xa", "-aet", "TRAILERLINK", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(
        lambda: (
            subprocess.run(
                ["echoscu", "-aec", "TRAILERLINK", "127.0.0.1", str(port)], capture_output=True
            ).returncode
            == 0
        ),
        30,
        "storescp listening",
    )
    yield port, out
    proc.kill()
    proc.wait(10)


def test_every_acknowledged_object_is_encrypted_exact_and_announced_once(
    gateway_factory, modality, topic_events, wire_recorder, tmp_path: Path
) -> None:
    gateway = gateway_factory()
    assert modality.echoscu(gateway.dicom_port).returncode == 0
    mammograms = [
        write_synthetic(
            tmp_path / f"mg{i}.dcm",
            rows=HOLOGIC_ROWS,
            columns=HOLOGIC_COLUMNS,
            bits_stored=bits,
            seed=i,
            instance_number=i + 1,
        ).path
        for i, bits in enumerate((12, 14, 16))
    ]
    run = modality.storescu(gateway.dicom_port, mammograms, options=["-xe"])
    assert run.returncode == 0 and sorted(run.succeeded) == sorted(mammograms), run.output
    real = []
    recorder_port, recorded = wire_recorder
    for name, options in REAL_FILES.items():
        path = tmp_path / name
        shutil.copy(PYDICOM_FILES / name, path)
        run = modality.storescu(gateway.dicom_port, [path], options=options)
        assert run.succeeded == [path], run.output
        reference = modality.storescu(recorder_port, [path], calling="STORESCU", options=options)
        assert reference.succeeded == [path], reference.output
        real.append(path)
    wire = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in recorded.iterdir()}
    sent = mammograms + real
    wait_until(lambda: gateway.index().outbox.pending_count() == 0, 30, "events published")
    events = [
        e
        for e in topic_events(OBJECT_RECEIVED)
        if e.meta.trailer_id == gateway.env["TRAILERLINK_TRAILER_ID"]
    ]
    by_sop = Counter(e.object.sop_instance_uid for e in events)
    for source in mammograms:
        _expect_stored(gateway, source, by_sop)
    for source in real:
        sop = dcmread(source, stop_before_pixels=True).SOPInstanceUID
        _expect_stored(gateway, source, by_sop, wire_copy=wire[sop])
    assert sum(by_sop.values()) == len(sent)
    assert all(isinstance(e, ObjectReceived) for e in events)
    mg = next(
        e
        for e in events
        if e.object.sop_instance_uid
        == dcmread(mammograms[0], stop_before_pixels=True).SOPInstanceUID
    )
    assert mg.dataset_size_bytes > HOLOGIC_ROWS * HOLOGIC_COLUMNS * 2
    assert mg.calling_ae_title == "MG1" and mg.spool_key_id == gateway.key.key_id
    assert (
        gateway.metric(
            "trailerlink_gateway_objects_received_total",
            sop_class="DigitalMammographyXRayImageStorageForPresentation",
        )
        == 3
    )
    # A re-send is acknowledged again but neither stored nor announced twice.
    again = modality.storescu(gateway.dicom_port, mammograms[:1], options=["-xe"])
    assert again.succeeded == mammograms[:1]
    assert gateway.metric("trailerlink_gateway_stores_total", outcome="duplicate") == 1
    assert len(gateway.layout.iter_object_files()) == len(sent)


def test_refusals_are_clear_leave_nothing_and_others_keep_storing(
    gateway_factory, modality, tmp_path: Path
) -> None:
    gateway = gateway_factory(peers="MG1,ECHOSCU")
    port = gateway.dicom_port

    unknown = modality.echoscu(port, calling="INTRUDER")
    assert unknown.returncode != 0 and "Calling AE Title Not Recognized" in unknown.stderr
    wrong_called = modality.echoscu(port, called="SOMEONEELSE")
    assert "Called AE Title Not Recognized" in wrong_called.stderr
    assert (
        gateway.metric("trailerlink_gateway_rejects_total", reason="calling_ae_not_recognised") == 1
    )
    assert (
        gateway.metric("trailerlink_gateway_rejects_total", reason="called_ae_not_recognised") == 1
    )

    ct = write_synthetic(tmp_path / "ct.dcm", rows=64, columns=64, sop_class_uid=CT_IMAGE_STORAGE)
    refused = modality.storescu(port, [ct.path])
    assert refused.succeeded == [] and "presentation context" in refused.output.lower()
    assert (
        gateway.metric("trailerlink_gateway_rejects_total", reason="abstract_syntax_not_supported")
        >= 1
    )

    # Malformed data set bytes behind a valid file meta: the gateway refuses with C000.
    good = write_synthetic(tmp_path / "good.dcm", rows=64, columns=64)
    raw = good.path.read_bytes()
    broken = tmp_path / "broken.dcm"
    offset = dataset_offset(raw)
    broken.write_bytes(raw[:offset] + b"\x08\x00\x16\x00UI\x40\x00" + b"\xff" * 200)
    status = _pynetdicom_store_raw(port, broken)
    assert 0xC000 <= status <= 0xCFFF

    # A peer vanishing mid-PDU: storescu killed while a big object is on the wire.
    big = write_synthetic(tmp_path / "big.dcm", rows=HOLOGIC_ROWS, columns=HOLOGIC_COLUMNS)
    sender = modality.storescu_popen(port, [big.path], options=["--max-send-pdu", "16384"])
    day_dirs = gateway.layout.objects_dir
    wait_until(lambda: any(day_dirs.rglob("*.partial")), 60, "the big object arriving")
    sender.kill()
    sender.wait(30)
    wait_until(lambda: not any(day_dirs.rglob("*.partial")), 60, "the abandoned store cleaned up")
    wait_until(
        lambda: gateway.metric("trailerlink_gateway_stores_total", outcome="abandoned") == 1,
        30,
        "abandon counted",
    )

    assert gateway.layout.iter_object_files() == []
    assert gateway.index().count() == 0
    # ...and the service keeps serving the others.
    assert modality.echoscu(port).returncode == 0
    study = write_study(tmp_path / "study", 2, rows=64, columns=64)
    ok = modality.storescu(port, [o.path for o in study])
    assert len(ok.succeeded) == 2, ok.output
    assert gateway.index().count() == 2


def _pynetdicom_store_raw(port: int, path: Path) -> int:
    """Send a file's data set bytes as they are (no decoding) with pynetdicom."""
    script = f"""
import sys
from pynetdicom import AE, _config
from pydicom import dcmread
_config.STORE_SEND_CHUNKED_DATASET = True
ae = AE(ae_title="MG1")
ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.1.2.1")
assoc = ae.associate("127.0.0.1", {port}, ae_title="TRAILERLINK")
assert assoc.is_established
status = assoc.send_c_store({str(path)!r})
assoc.release()
print(int(status.Status))
"""
    done = subprocess.run(
        [sys_executable(), "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])


def sys_executable() -> str:
    import sys

    return sys.executable


PYDICOM_FILES = (
    Path(dcmread.__module__ and __import__("pydicom.data").data.__file__).parent / "test_files"
)


def test_data_set_is_stored_by_its_dataset_bytes_not_decoded(tmp_path: Path) -> None:
    """The test helper itself: dataset_bytes is what follows the file meta."""
    obj = write_synthetic(tmp_path / "x.dcm", rows=8, columns=8)
    raw = obj.path.read_bytes()
    assert dataset_bytes(obj.path) == raw[dataset_offset(raw) :]
