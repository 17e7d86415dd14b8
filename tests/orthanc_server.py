"""A real Orthanc with its DICOMweb plugin on 127.0.0.1, started and stopped by the tests.

`start_orthanc(folder)` writes a config into `folder` (free HTTP and DICOM ports, storage
and index in `folder`, HTTP basic auth with one registered user, remote access off, the
DICOMweb plugin at /dicom-web/), starts `Orthanc config.json` and waits until /system
answers. `OrthancServer.stop()` ends it (terminate, then kill after a grace period).
Orthanc and the plugin come from Debian (`orthanc`, `orthanc-dicomweb`); without them the
test is skipped on a developer's machine and fails under CI=true (.ci/run installs them).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from system_tools import require_tool

#: Where Debian's orthanc-dicomweb puts the plugin (`dpkg -L orthanc-dicomweb`).
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "mammoseg", "s3cret-for-tests"


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OrthancServer:
    folder: Path
    http_port: int
    process: subprocess.Popen
    log_path: Path
    user: str = USER
    password: str = PASSWORD
    _log: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self, method: str, path: str, **kwargs) -> requests.Response:
        """Orthanc's own REST API (for test set-up and checks), authenticated."""
        response = requests.request(method, f"{self.url}{path}", auth=(self.user, self.password), timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def upload(self, path: str | Path) -> dict:
        """Store one DICOM file through Orthanc's REST API (not through the code under test)."""
        return self.rest("POST", "/instances", data=Path(path).read_bytes()).json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()


def write_config(folder: Path, http_port: int, dicom_port: int) -> Path:
    config = {
        "Name": "mammoseg-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
        "StorageCompression": False,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def start_orthanc(folder: Path, startup_s: float = 60.0) -> OrthancServer:
    """Start Orthanc with a generated config in `folder`; return once its REST API answers."""
    program = require_tool("Orthanc", "orthanc")
    require_tool(DICOMWEB_PLUGIN, "orthanc-dicomweb")
    folder.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    config = write_config(folder, http_port, free_port())
    log_path = folder / "orthanc.log"
    log = open(log_path, "w")
    process = subprocess.Popen([program, str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = OrthancServer(folder, http_port, process, log_path, _log=log)
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"Orthanc exited with status {process.returncode} at start:\n{server.log()[-3000:]}")
        try:
            if server.rest("GET", "/system").ok:
                plugins = server.rest("GET", "/plugins").json()
                if "dicom-web" not in plugins:
                    server.stop()
                    raise RuntimeError(f"Orthanc started without its DICOMweb plugin (plugins: {plugins})")
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"Orthanc did not answer on port {http_port} within {startup_s:.0f} s:\n{server.log()[-3000:]}")
