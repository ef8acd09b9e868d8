"""A real Orthanc (Debian's package) as the PACS, started by hand on free ports.

Debian's Orthanc does not start on install here, and a test wants its own anyway::

    with Orthanc(tmp_path / "orthanc", ae_title="PACS") as pacs:
        ...  # C-STORE to 127.0.0.1:pacs.dicom_port, AE "PACS"
        pacs.instances()                      # Orthanc ids
        pacs.instance_file(orthanc_id)        # the stored Part 10 bytes
        pacs.stop(); pacs.start()             # a PACS outage

Plugins are off, storage and index live under the given directory, the REST API is
on 127.0.0.1 without authentication. ``lua`` (optional) is written as a script, e.g.
a ``ReceivedInstanceFilter`` that refuses objects.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceExited
from trailerlink_testing.waiting import wait_until


def orthanc_binary() -> str:
    found = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
    )
    if found is None:
        raise FileNotFoundError("Orthanc is not installed (apt-get install orthanc)")
    return found


class Orthanc:
    """One Orthanc process with a generated configuration."""

    def __init__(
        self,
        directory: Path,
        *,
        ae_title: str = "PACS",
        dicom_port: int | None = None,
        http_port: int | None = None,
        lua: str | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.ae_title = ae_title
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.lua = lua
        self.extra_config = extra_config or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "Name": "trailerlink-test-pacs",
            "StorageDirectory": str(self.directory / "storage"),
            "IndexDirectory": str(self.directory / "index"),
            "Plugins": [],
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": True,
            "HttpPort": self.http_port,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "StorageCompression": False,
            "OverwriteInstances": False,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 4,
            "DicomThreadsCount": 4,
            "UnknownSopClassAccepted": True,
            "LuaScripts": [],
        }
        if self.lua:
            script = self.directory / "filter.lua"
            script.write_text(self.lua)
            config["LuaScripts"] = [str(script)]
        config.update(self.extra_config)
        path = self.directory / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout: float = 30.0) -> Orthanc:
        config = self._write_config()
        log = open(self.directory / "orthanc.log", "ab")
        try:
            self.proc = subprocess.Popen(
                [orthanc_binary(), str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        wait_until(self._answers, timeout, "Orthanc answers its REST API")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceExited(f"Orthanc exited: see {self.directory / 'orthanc.log'}")
        try:
            self.get("/system")
        except (urllib.error.URLError, OSError):
            return False
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- REST ------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as rsp:  # noqa: S310
            data = rsp.read()
        try:
            return json.loads(data)
        except ValueError:
            return data

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as rsp:  # noqa: S310
            return rsp.read()

    def instances(self) -> list[str]:
        return list(self.get("/instances"))

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """Orthanc's id of the instance with this SOP Instance UID, or None."""
        body = json.dumps({"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}})
        request = urllib.request.Request(  # noqa: S310 - a local test URL
            self.url + "/tools/find", data=body.encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as rsp:  # noqa: S310
            found = json.loads(rsp.read())
        return found[0] if found else None

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored Part 10 file (Orthanc writes its own group 0002)."""
        return self.get_bytes(f"/instances/{orthanc_id}/file")

    def new_instance_changes(self) -> int:
        """How many NewInstance events Orthanc logged (a second store of the same
        instance is not one)."""
        count, since = 0, 0
        while True:
            page = self.get(f"/changes?since={since}&limit=1000")
            count += sum(1 for c in page["Changes"] if c["ChangeType"] == "NewInstance")
            if page["Done"]:
                return count
            since = page["Last"]
