"""Optional TLS: dcmtk's findscu (+tls) as the modality against the DICOM port, and MLLP
over TLS between our HL7 sender and our HL7 listener; a certificate from another CA, or
none, is refused and changes nothing."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind
from trailerlink_events.kafka import DependencyUnavailable
from trailerlink_ingest.devca import issue, make_ca
from trailerlink_testing import hl7 as hl7client
from trailerlink_worklist import tls
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.forward import Hl7Sender
from trailerlink_worklist.model import Source
from trailerlink_worklist.settings import WorklistSettings

from .conftest import booking, hl7_listening
from .test_hl7_listener import siu


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, rogue = make_ca("worklist test CA"), make_ca("someone else's CA")
    ca.write(d / "ca.crt", d / "ca.key")
    rogue.write(d / "rogue-ca.crt", d / "rogue-ca.key")
    issue(ca, "localhost", server=True, dns_names=["localhost"], ip_addresses=["127.0.0.1"]).write(
        d / "server.crt", d / "server.key"
    )
    issue(ca, "MGTRAILER1").write(d / "modality.crt", d / "modality.key")
    issue(rogue, "MGTRAILER1").write(d / "rogue.crt", d / "rogue.key")
    return Pki(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "modality.crt",
        d / "modality.key",
        d / "rogue-ca.crt",
        d / "rogue.crt",
        d / "rogue.key",
    )


def _findscu_tls(
    port: int, key: Path | None, cert: Path | None, ca: Path, keys: list[str]
) -> tuple[int, int]:
    """findscu over TLS (or plain TCP without key/cert): (exit code, responses)."""
    with tempfile.TemporaryDirectory() as out:
        argv = [
            "findscu",
            "-W",
            "-X",
            "-od",
            out,
            "-aet",
            "MGTRAILER1",
            "-aec",
            "TRAILERLINK_MWL",
            "-to",
            "10",
            "-ta",
            "10",
            "-td",
            "10",
        ]
        if key is not None and cert is not None:
            argv += ["+tls", str(key), str(cert), "+cf", str(ca)]
        for k in keys:
            argv += ["-k", k]
        argv += ["127.0.0.1", str(port)]
        proc = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        return proc.returncode, len(list(Path(out).glob("rsp*.dcm")))


@pytest.fixture
def tls_scp(make_app, pki: Pki) -> WorklistApp:  # type: ignore[no-untyped-def]
    app: WorklistApp = make_app(
        dicom_tls_cert_file=pki.server_cert,
        dicom_tls_key_file=pki.server_key,
        dicom_tls_client_ca_file=pki.ca,
    )
    first, last = app.worklist.window()
    app.worklist.replace_window([booking(i) for i in range(3)], Source.DICOM_MWL, first, last)
    app.scp.start()
    return app


KEYS = ["AccessionNumber", "PatientName", "ScheduledProcedureStepSequence[0].Modality=MG"]


def test_findscu_over_tls_with_the_trusted_certificate(tls_scp: WorklistApp, pki: Pki) -> None:
    code, answers = _findscu_tls(tls_scp.scp.port, pki.client_key, pki.client_cert, pki.ca, KEYS)
    assert (code, answers) == (0, 3)


def test_a_certificate_from_another_ca_is_refused(tls_scp: WorklistApp, pki: Pki) -> None:
    code, answers = _findscu_tls(tls_scp.scp.port, pki.rogue_key, pki.rogue_cert, pki.ca, KEYS)
    assert code != 0 and answers == 0


def test_plain_tcp_and_no_client_certificate_are_refused(tls_scp: WorklistApp, pki: Pki) -> None:
    code, answers = _findscu_tls(tls_scp.scp.port, None, None, pki.ca, KEYS)
    assert code != 0 and answers == 0
    # A TLS client that trusts the server but presents no certificate.
    ae = AE(ae_title="MGTRAILER1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate(
        "127.0.0.1",
        tls_scp.scp.port,
        ae_title="TRAILERLINK_MWL",
        tls_args=(tls.client_context(pki.ca), "localhost"),
    )
    assert not assoc.is_established


def test_settings_refuse_a_certificate_without_its_key(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ValueError, match="CERT_FILE and _KEY_FILE"):
        WorklistSettings(data_dir=tmp_path, dicom_tls_cert_file=pki.server_cert)


@pytest.fixture
async def tls_listener(make_app, pki: Pki):  # type: ignore[no-untyped-def]
    app: WorklistApp = make_app(
        upstream="hl7",
        hl7_tls_cert_file=pki.server_cert,
        hl7_tls_key_file=pki.server_key,
        hl7_tls_client_ca_file=pki.ca,
    )
    async with hl7_listening(app) as running:
        yield running


async def test_mllp_over_tls_between_our_sender_and_our_listener(tls_listener, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    app, listener = tls_listener
    sender = Hl7Sender(
        "127.0.0.1", listener.port, 10, tls.client_context(pki.ca, pki.client_cert, pki.client_key)
    )
    await sender.send(siu("S12", "APPTTLS1"))  # returns only on AA
    assert app.cache.get_step("APPTTLS1|APPTTLS1") is not None


async def test_mllp_tls_refuses_wrong_certificates_and_plain_text(tls_listener, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    app, listener = tls_listener
    rogue = Hl7Sender(
        "127.0.0.1", listener.port, 10, tls.client_context(pki.ca, pki.rogue_cert, pki.rogue_key)
    )
    with pytest.raises(DependencyUnavailable):
        await rogue.send(siu("S12", "APPTTLS2"))
    # The sender does not trust a server whose certificate another CA signed.
    doubting = Hl7Sender(
        "127.0.0.1",
        listener.port,
        10,
        tls.client_context(pki.rogue_ca, pki.client_cert, pki.client_key),
    )
    with pytest.raises(DependencyUnavailable):
        await doubting.send(siu("S12", "APPTTLS3"))
    try:  # plain MLLP: the handshake fails, the connection closes without an ACK
        reply = await asyncio.to_thread(
            hl7client.send, "127.0.0.1", listener.port, siu("S12", "APPTTLS4")
        )
    except OSError:
        reply = ""
    assert "MSA|" not in reply
    assert all(app.cache.get_step(f"APPTTLS{i}|APPTTLS{i}") is None for i in (2, 3, 4))
