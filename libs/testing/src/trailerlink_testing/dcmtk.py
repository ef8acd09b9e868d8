"""dcmtk as a real peer in tests: ``wlmscpfs`` (a worklist SCP serving ``.wl`` files made
with ``dump2dcm``) and ``findscu`` (a modality asking for its worklist).

    with Wlmscpfs(tmp / "wl", ae_title="NBSS_MWL") as broker:
        broker.write("acc1", dataset)                # dump2dcm -> NBSS_MWL/acc1.wl
        result = findscu("127.0.0.1", broker.port, "NBSS_MWL",
                         ["ScheduledProcedureStepSequence[0].Modality=MG", "PatientName"])
        result.responses                              # pydicom Datasets, one per match

Needs the Debian ``dcmtk`` package (scripts/system-packages.txt).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from pydicom import dcmread
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset

from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceExited
from trailerlink_testing.waiting import wait_until


def dump_text(ds: Dataset, indent: int = 0) -> str:
    """``ds`` in dcmtk's dump format (what ``dump2dcm`` reads)."""
    lines = []
    pad = "  " * indent
    for elem in ds:
        tag = f"({elem.tag.group:04x},{elem.tag.element:04x})"
        if elem.VR == "SQ":
            lines.append(f"{pad}{tag} SQ")
            for item in elem.value or []:
                lines.append(f"{pad}  (fffe,e000) -")
                lines.append(dump_text(item, indent + 2))
                lines.append(f"{pad}  (fffe,e00d) -")
            lines.append(f"{pad}(fffe,e0dd) -")
            continue
        value = elem.value
        if value is None:
            text = ""
        elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
        lines.append(f"{pad}{tag} {elem.VR} [{text}]")
    return "\n".join(line for line in lines if line)


def write_wl_file(path: Path, ds: Dataset) -> None:
    """Write ``ds`` as a worklist file with ``dump2dcm`` (atomically: a scan never sees
    half a file). Text is encoded in the dataset's Specific Character Set."""
    charset = ds.get("SpecificCharacterSet", "") or ""
    codec = python_encoding.get(charset if isinstance(charset, str) else charset[0], "ascii")
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "wl.dump"
        dump.write_bytes(dump_text(ds).encode(codec))
        staged = Path(tmp) / "wl.wl"
        subprocess.run(
            ["dump2dcm", "-q", "--write-xfer-little", str(dump), str(staged)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        staged_at_dest = path.with_suffix(".tmp")
        staged_at_dest.write_bytes(staged.read_bytes())
        os.replace(staged_at_dest, path)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Wlmscpfs:
    """A running ``wlmscpfs`` serving ``<directory>/<ae_title>/*.wl``."""

    def __init__(
        self,
        directory: Path,
        ae_title: str = "NBSS_MWL",
        port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.ae_title = ae_title
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "lockfile").touch()

    @property
    def folder(self) -> Path:
        return self.directory / self.ae_title

    def write(self, name: str, ds: Dataset) -> Path:
        path = self.folder / f"{name}.wl"
        write_wl_file(path, ds)
        return path

    def remove(self, name: str) -> None:
        (self.folder / f"{name}.wl").unlink(missing_ok=True)

    def start(self) -> Wlmscpfs:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                ["wlmscpfs", "--data-files-path", str(self.directory), str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        wait_until(lambda: self._alive() and port_open(self.port), 20, "wlmscpfs listening")
        return self

    def _alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise ServiceExited("wlmscpfs exited")
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Wlmscpfs:
        return self.start() if self.proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class FindResult:
    """What ``findscu`` got: the responses (in order) and the final status line."""

    responses: list[Dataset]
    returncode: int
    log: str

    @property
    def final_status(self) -> str:
        """E.g. "Success", "Cancel" (without the detail after a colon), or "" when findscu
        saw no final response."""
        for line in reversed(self.log.splitlines()):
            if "Final Find Response" in line and "(" in line:
                return line.rsplit("(", 1)[1].rstrip(")").split(":")[0].strip()
        return ""


def findscu(
    host: str,
    port: int,
    called_ae: str,
    keys: Sequence[str | bytes],
    *,
    calling_ae: str = "MODALITY",
    cancel_after: int | None = None,
    timeout: float = 30.0,
) -> FindResult:
    """Run ``findscu -W`` (worklist) with ``-k`` keys; ``cancel_after`` sends C-CANCEL
    after that many responses. Keys may be bytes (already in the query's charset)."""
    with tempfile.TemporaryDirectory() as out:
        argv: list[str | bytes] = [
            "findscu",
            "-W",
            "-v",
            "-X",
            "-od",
            out,
            "-aet",
            calling_ae,
            "-aec",
            called_ae,
        ]
        if cancel_after is not None:
            argv += ["--cancel", str(cancel_after)]
        for key in keys:
            argv += ["-k", key]
        argv += [host, str(port)]
        proc = subprocess.run(argv, capture_output=True, timeout=timeout)
        files = sorted(Path(out).glob("rsp*.dcm"))
        responses = [dcmread(f) for f in files]
    return FindResult(responses, proc.returncode, (proc.stdout + proc.stderr).decode("latin-1"))
