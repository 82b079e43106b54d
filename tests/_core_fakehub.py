"""A small Hugging Face Hub stand-in on 127.0.0.1, enough for huggingface_hub's model_info and snapshot_download.

Endpoints (as huggingface_hub 2.x calls them; see hf_api.model_info, hf_api._iter_repo_tree_pages and
file_download.get_hf_file_metadata / http_get):
  GET  /api/models/{repo}                      -> {"id", "sha", "siblings": [{"rfilename"}]} at main
  GET  /api/models/{repo}/revision/{rev}       -> the same at a branch, tag or commit
  GET  /api/models/{repo}/tree/{rev}           -> [{"type": "file", "path", "size", "oid", "lfs"?}]
  HEAD /{repo}/resolve/{rev}/{file}            -> X-Repo-Commit, ETag / X-Linked-Etag, Content-Length
  GET  /{repo}/resolve/{rev}/{file}            -> the bytes (Range honoured with 206 and Content-Range)
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo), which huggingface_hub
maps to its exception classes. A repo with a token answers 401 RepoNotFound unless `Authorization: Bearer
<token>`; a gated repo shows its model info but answers file requests 403 GatedRepo.

For the streaming tests: model info carries `cardData` (the model card's YAML) when a repo has one;
`bytes_served` counts the body bytes of every file response; `fail_next(repo, file, n, status)` makes the next
n ranged GETs of a file answer `status` (a server error mid-stream).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Files that the real hub stores in LFS (ETag of the pointer, X-Linked-Etag = sha256 of the content).
LFS_SUFFIXES = (".safetensors", ".bin")


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]]  # commit sha -> {filename: content}
    refs: dict[str, str]  # branch or tag -> commit sha ("main" required)
    token: str | None = None  # private repo: this bearer token is required
    card_data: dict | None = None  # the model card's metadata, served as `cardData`
    gated: bool = False  # file requests answer 403 GatedRepo (model info stays readable)

    def commit(self, rev: str) -> str | None:
        if rev in self.commits:
            return rev
        return self.refs.get(rev)


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None
    range: str | None = None
    served: int = 0  # body bytes sent


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    failures: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (repo, file) -> statuses to answer
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_repo(self, repo_id: str, revisions: dict[str, dict[str, bytes]],
                 token: str | None = None, card_data: dict | None = None, gated: bool = False) -> dict[str, str]:
        """revisions: ref name -> files; the first is "main". Returns ref -> commit sha."""
        commits: dict[str, dict[str, bytes]] = {}
        refs: dict[str, str] = {}
        for ref, files in revisions.items():
            sha = hashlib.sha1(f"{repo_id}@{ref}".encode() + b"".join(sorted(files.values()))).hexdigest()
            commits[sha] = dict(files)
            refs[ref] = sha
        assert "main" in refs, "a repo needs a main branch"
        self.repos[repo_id] = FakeRepo(commits, refs, token, card_data, gated)
        return refs

    def move_branch(self, repo_id: str, ref: str, files: dict[str, bytes]) -> str:
        """A new commit on `ref` (a push): returns its sha."""
        repo = self.repos[repo_id]
        sha = hashlib.sha1(f"{repo_id}@{ref}@{len(repo.commits)}".encode() + b"".join(sorted(files.values())))
        repo.commits[sha.hexdigest()] = dict(files)
        repo.refs[ref] = sha.hexdigest()
        return sha.hexdigest()

    def fail_next(self, repo_id: str, filename: str, n: int, status: int = 503) -> None:
        """The next n ranged GETs of a file past its first byte (tensor data, not the header) fail."""
        with self._lock:
            self.failures[(repo_id, filename)] = [status] * n

    @property
    def bytes_served(self) -> int:
        """Body bytes of every file (resolve) response so far."""
        return sum(r.served for r in self.requests if "/resolve/" in r.path)

    def reset_counts(self) -> None:
        self.requests.clear()

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakehub", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@functools.lru_cache(maxsize=256)
def _digest(algo: str, data: bytes) -> str:
    """Content hashes for ETags, once per file (a ranged read of a 1 GB shard must not rehash it)."""
    return hashlib.new(algo, data).hexdigest()


def files_from_dir(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>revision|tree)/(?P<rev>[^/]+))?/?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    # ---- plumbing ---------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self.request.served += len(body)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        h = {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})}
        self._send(status, json.dumps({"error": message}).encode(), h)

    def _repo_at(self, repo_id: str, rev: str) -> tuple[FakeRepo, str] | None:
        """The repo and the commit `rev` names; None once the hub's 404/401 answer is sent."""
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(401, "RepoNotFound", "Invalid username or password.")
            return None
        sha = repo.commit(rev)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo, sha

    # ---- routes -----------------------------------------------------------
    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        self.request = Request(self.command, path, self.headers.get("Authorization"), self.headers.get("Range"))
        self.fake.requests.append(self.request)
        if m := _API.match(path):
            self._api(m["repo"], m["kind"], unquote(m["rev"]) if m["rev"] else "main")
        elif m := _RESOLVE.match(path):
            self._resolve(m["repo"], unquote(m["rev"]), unquote(m["file"]))
        else:
            self._error(404, "NotFound", f"no route {path}")

    def _api(self, repo_id: str, kind: str | None, rev: str) -> None:
        found = self._repo_at(repo_id, rev)
        if found is None:
            return
        repo, sha = found
        files = repo.commits[sha]
        if kind == "tree":
            entries = []
            for name, data in sorted(files.items()):
                entry = {"type": "file", "path": name, "size": len(data), "oid": _digest("sha1", data)}
                if name.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"oid": _digest("sha256", data), "size": len(data), "pointerSize": 134}
                entries.append(entry)
            self._send(200, json.dumps(entries).encode())
            return
        info = {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.token is not None,
                "gated": "manual" if repo.gated else False,
                "siblings": [{"rfilename": n, "size": len(data)} for n, data in sorted(files.items())]}
        if repo.card_data is not None:
            info["cardData"] = repo.card_data
        self._send(200, json.dumps(info).encode())

    def _resolve(self, repo_id: str, rev: str, filename: str) -> None:
        found = self._repo_at(repo_id, rev)
        if found is None:
            return
        repo, sha = found
        if repo.gated and self.headers.get("Authorization") is None:
            self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to it "
                        "and be authenticated to access it. Please log in.")
            return
        data = repo.commits[sha].get(filename)
        if data is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist", {"X-Repo-Commit": sha})
            return
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "ETag": f'"{_digest("sha1", data)}"'}
        if filename.endswith(LFS_SUFFIXES):
            headers["X-Linked-Etag"] = f'"{_digest("sha256", data)}"'
            headers["X-Linked-Size"] = str(len(data))
        with self.fake._lock:
            pending = self.fake.failures.get((repo_id, filename))
            past_header = re.fullmatch(r"bytes=[1-9]\d*-\d*", self.headers.get("Range") or "") is not None
            status = pending.pop(0) if pending and self.command == "GET" and past_header else None
        if status is not None:
            self._error(status, "ServerError", "injected failure")
            return
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m and self.command == "GET":
            start = int(m[1])
            stop = int(m[2]) + 1 if m[2] else len(data)
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            self._send(206, data[start:stop], headers, "application/octet-stream")
            return
        self._send(200, data, headers, "application/octet-stream")
