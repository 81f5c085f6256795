"""Dataset resolution (path, data dir, env var) and downloads from a server the test runs on 127.0.0.1."""

from __future__ import annotations

import http.server
import os
import socket
import threading
from pathlib import Path

import pytest
from conftest import d4rl_arrays, write_raw_hdf5

import mdpt.data.load as load_mod
from mdpt.data.load import default_data_dir, load_dataset
from mdpt.errors import MDPTError

DID = "bullet-hopper-medium-v0"


def test_resolution_by_path_dir_and_env(tmp_path, tiny_data_dir, monkeypatch):
    by_id = load_dataset(DID)  # MDPT_DATA_DIR from the fixture
    assert by_id.dataset_id == DID and by_id.source == str(tiny_data_dir / f"{DID}.hdf5")
    by_path = load_dataset(tiny_data_dir / f"{DID}.hdf5")
    assert by_path.fingerprint == by_id.fingerprint
    by_arg = load_dataset(DID, data_dir=tiny_data_dir)
    assert by_arg.fingerprint == by_id.fingerprint
    monkeypatch.delenv("MDPT_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "mdpt" / "datasets"


def test_offline_missing_dataset_says_how_to_make_it(tmp_path, run_cli):
    with pytest.raises(MDPTError) as info:
        load_dataset(DID, data_dir=tmp_path)
    msg = str(info.value)
    assert f"mdpt data make {DID}" in msg and "MDPT_DATA_DIR" in msg and "MDPT_OFFLINE" in msg
    code, _, err = run_cli("data", "info", DID, "--data-dir", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_download_disabled_by_parameter(tmp_path, monkeypatch):
    monkeypatch.delenv("MDPT_OFFLINE")
    with pytest.raises(MDPTError, match="downloading is off"):
        load_dataset(DID, data_dir=tmp_path, download=False)


# --------------------------------------------------------------------------------------------
# a local HTTP server


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    requests: list[str] = []

    def log_message(self, *args):  # keep stderr clean
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        body = type(self).payload
        if self.path.startswith("/ok/"):
            self._send(body, len(body))
        elif self.path.startswith("/truncated/"):
            self._send(body[: len(body) // 2], len(body))
        elif self.path.startswith("/garbage/"):
            junk = b"\x00not hdf5" * 100
            self._send(junk, len(junk))
        else:
            self.send_error(404, "Not Found")

    def _send(self, data: bytes, announced: int):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server(tmp_path, monkeypatch):
    source = write_raw_hdf5(tmp_path / "served.hdf5", d4rl_arrays(seed=9), {"env_id": "HopperBulletEnv-v0"})
    _Handler.payload = source.read_bytes()
    _Handler.requests = []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.delenv("MDPT_OFFLINE")
    monkeypatch.setenv("MDPT_DOWNLOAD_TIMEOUT", "10")
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _use(monkeypatch, url: str):
    monkeypatch.setenv("MDPT_D4RL_URL", url)


def test_download_success(tmp_path, server, monkeypatch):
    data_dir = tmp_path / "data"
    _use(monkeypatch, server + "/ok/{dataset_id}.hdf5")
    data = load_dataset(DID, data_dir=data_dir)
    assert len(data) == 15 and data.dataset_id == DID
    assert os.listdir(data_dir) == [f"{DID}.hdf5"]
    assert (data_dir / f"{DID}.hdf5").read_bytes() == _Handler.payload
    assert _Handler.requests == [f"/ok/{DID}.hdf5"]
    load_dataset(DID, data_dir=data_dir)  # now local: no second request
    assert len(_Handler.requests) == 1


def test_download_with_known_checksum(tmp_path, server, monkeypatch):
    import hashlib

    _use(monkeypatch, server + "/ok/{dataset_id}.hdf5")
    good = hashlib.sha256(_Handler.payload).hexdigest()
    monkeypatch.setitem(load_mod.KNOWN_CHECKSUMS, DID, (len(_Handler.payload), good))
    assert len(load_dataset(DID, data_dir=tmp_path / "good")) == 15
    monkeypatch.setitem(load_mod.KNOWN_CHECKSUMS, DID, (len(_Handler.payload), "0" * 64))
    with pytest.raises(MDPTError, match="checksum mismatch"):
        load_dataset(DID, data_dir=tmp_path / "bad")
    assert os.listdir(tmp_path / "bad") == []


@pytest.mark.parametrize("route,fragment", [
    ("/missing/{dataset_id}.hdf5", "HTTP 404"),
    ("/truncated/{dataset_id}.hdf5", "transfer cut short"),
    ("/garbage/{dataset_id}.hdf5", "does not check out"),
])
def test_download_failures_leave_nothing(tmp_path, server, monkeypatch, run_cli, route, fragment):
    data_dir = tmp_path / "data"
    _use(monkeypatch, server + route)
    with pytest.raises(MDPTError) as info:
        load_dataset(DID, data_dir=data_dir)
    msg = str(info.value)
    assert fragment in msg and "nothing was saved" in msg and f"mdpt data make {DID}" in msg and "\n" not in msg
    assert os.listdir(data_dir) == []
    code, out, err = run_cli("data", "info", DID, "--data-dir", data_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err
    assert os.listdir(data_dir) == []


def test_no_network_at_all(tmp_path, monkeypatch, run_cli):
    monkeypatch.delenv("MDPT_OFFLINE")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    _use(monkeypatch, f"http://127.0.0.1:{port}/{{dataset_id}}.hdf5")
    data_dir = tmp_path / "data"
    with pytest.raises(MDPTError, match="failed: .*refused"):
        load_dataset(DID, data_dir=data_dir)
    assert os.listdir(data_dir) == []
    code, _, err = run_cli("data", "info", DID, "--data-dir", data_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "mdpt data make" in err


def test_offline_env_var_blocks_download(tmp_path, server, monkeypatch):
    _use(monkeypatch, server + "/ok/{dataset_id}.hdf5")
    monkeypatch.setenv("MDPT_OFFLINE", "1")
    with pytest.raises(MDPTError, match="MDPT_OFFLINE is set"):
        load_dataset(DID, data_dir=tmp_path)
    assert _Handler.requests == []


def test_medium_expert_downloads_parts(tmp_path, server, monkeypatch):
    _use(monkeypatch, server + "/ok/{dataset_id}.hdf5")
    data = load_dataset("bullet-hopper-medium-expert-v0", data_dir=tmp_path / "data")
    assert len(data) == 30
    assert sorted(_Handler.requests) == ["/ok/bullet-hopper-expert-v0.hdf5", "/ok/bullet-hopper-medium-v0.hdf5"]
    assert sorted(p.name for p in Path(tmp_path / "data").iterdir()) == ["bullet-hopper-expert-v0.hdf5",
                                                                "bullet-hopper-medium-v0.hdf5"]
