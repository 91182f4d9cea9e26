"""Fixtures, including a loopback stand-in for the Hugging Face Hub.

The Hub cannot be reached from the test machines, so :class:`LoopbackHub` answers the few HTTP
routes that ``huggingface_hub``'s real client uses to create a repository, validate a model
card, pre-upload (Git LFS "basic" transfer), commit, and download (``resolve``). It keeps
repositories in memory as a list of commits. Xet storage is a separate protocol this server does
not speak, so the tests turn it off (``HF_HUB_DISABLE_XET``) and the client falls back to LFS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
import yaml

NOT_FOUND = {"X-Error-Code": "RepoNotFound"}


@dataclass
class Repo:
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)  # (oid, files)
    lfs_paths: set[str] = field(default_factory=set)

    @property
    def files(self) -> dict[str, bytes]:
        return self.commits[-1][1] if self.commits else {}

    @property
    def head(self) -> str:
        return self.commits[-1][0] if self.commits else "0" * 40


class LoopbackHub:
    """An in-memory Hub on 127.0.0.1; ``url`` is its endpoint, ``requests`` a log of routes."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, payload=None, headers=None, body: bytes | None = None):
                data = body if body is not None else json.dumps(payload or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _route(self):
                hub.requests.append((self.command, self.path, self.headers.get("Authorization")))
                path = self.path.split("?", 1)[0]
                for method, pattern, handler in hub.routes:
                    match = re.fullmatch(pattern, path)
                    if method == self.command and match:
                        return handler(self, *match.groups())
                return self._reply(404, {"error": f"no route {self.command} {path}"})

            do_GET = do_POST = do_PUT = do_HEAD = _route

        self.routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", self.preupload),
            ("POST", r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/lfs-upload/([0-9a-f]{64})", self.lfs_upload),
            ("POST", r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", self.commit),
            ("HEAD", r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.resolve),
            ("GET", r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.resolve),
        ]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- routes ---------------------------------------------------------------------------
    def create_repo(self, h):
        payload = json.loads(h._body())
        repo_id = f"{payload['organization']}/{payload['name']}"
        self.repos.setdefault(repo_id, Repo())
        return h._reply(200, {"url": f"{self.url}/{repo_id}"})

    def validate_yaml(self, h):
        content = json.loads(h._body())["content"]
        try:
            yaml.safe_load(content.split("---")[1])
        except (yaml.YAMLError, IndexError) as e:
            return h._reply(400, {"errors": [{"message": str(e)}]})
        return h._reply(200, {"errors": [], "warnings": []})

    def preupload(self, h, repo_id, _revision):
        if repo_id not in self.repos:
            return h._reply(404, {"error": "Repository not found"}, NOT_FOUND)
        files = json.loads(h._body())["files"]
        # as the Hub does: binary weights go through LFS, small text inline in the commit
        modes = [
            {
                "path": f["path"],
                "shouldIgnore": False,
                "oid": None,
                "uploadMode": "lfs" if f["path"].endswith(".safetensors") else "regular",
            }
            for f in files
        ]
        return h._reply(200, {"files": modes})

    def lfs_batch(self, h, _repo_id):
        objects = json.loads(h._body())["objects"]
        actions = [
            {
                "oid": o["oid"],
                "size": o["size"],
                "actions": {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"}},
            }
            for o in objects
        ]
        return h._reply(200, {"transfer": "basic", "objects": actions})

    def lfs_upload(self, h, oid):
        data = h._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return h._reply(400, {"error": "sha256 does not match the announced oid"})
        self.lfs[oid] = data
        return h._reply(200, {})

    def commit(self, h, repo_id, _revision):
        repo = self.repos.get(repo_id)
        if repo is None:
            return h._reply(404, {"error": "Repository not found"}, NOT_FOUND)
        files = dict(repo.files)
        for line in h._body().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return h._reply(400, {"error": f"LFS object {value['oid']} was never uploaded"})
                files[value["path"]] = self.lfs[value["oid"]]
                repo.lfs_paths.add(value["path"])
        oid = hashlib.sha1(repo.head.encode() + json.dumps(sorted(files)).encode()).hexdigest()
        for data in files.values():
            oid = hashlib.sha1(oid.encode() + data).hexdigest()
        repo.commits.append((oid, files))
        return h._reply(
            200,
            {
                "commitUrl": f"{self.url}/{repo_id}/commit/{oid}",
                "commitOid": oid,
                "pullRequestUrl": None,
            },
        )

    def resolve(self, h, repo_id, revision, filename):
        repo = self.repos.get(repo_id)
        if repo is None or not repo.commits:
            return h._reply(404, {"error": "Repository not found"}, NOT_FOUND)
        commit = next((c for c in repo.commits if c[0] == revision), repo.commits[-1])
        if filename not in commit[1]:
            return h._reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        data = commit[1][filename]
        etag = hashlib.sha256(data).hexdigest()
        return h._reply(200, body=data, headers={"X-Repo-Commit": commit[0], "ETag": f'"{etag}"'})

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def loopback_hub_class():
    return LoopbackHub


@pytest.fixture
def loopback_hub(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with LoopbackHub() as hub:
        yield hub


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
