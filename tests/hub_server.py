"""A local Hugging Face Hub-compatible HTTP server for the tests.

The real ``huggingface_hub`` client (and ``datasets``, ``transformers``) talk to it when ``HF_ENDPOINT`` points at it
and ``HF_HUB_DISABLE_XET=1`` is set before they are imported (see ``conftest.py``). It speaks the subset of the Hub
API they use: repo creation/deletion/settings, repo info, tree and paths-info listings, commit history, the
preupload + NDJSON commit flow (large, binary and ``.gitattributes``-matched files go through the Git LFS batch API
with the basic transfer, as on the Hub) and ``/resolve/`` downloads with the Hub's headers, ``Range`` requests and
error codes (``X-Error-Code``). Not supported: branches other than ``main``, tags, pull requests, Xet storage.

Each repo keeps a linear history on the ``main`` branch; every commit stores its full file tree, and file contents
live once on disk under ``root/objects`` named by their sha256. Like on the Hub, a new repo starts with an
"initial commit" holding a ``.gitattributes`` file.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

#: URL segment of the API (``/api/models/...``) -> repo type.
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
#: Repo type -> prefix of its web and file URLs (``/datasets/user/name/resolve/...``).
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
#: Files at least this large are uploaded through Git LFS, like binary files and `.gitattributes` matches.
LFS_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = b"".join(
    f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n".encode()
    for ext in ("bin", "safetensors", "pt", "pth", "ckpt", "h5", "onnx", "parquet", "arrow", "zip", "gz", "npy")
)
_SHA1 = re.compile(r"[0-9a-f]{40}")


class HubError(Exception):
    """An HTTP error answered the way the Hub does: JSON ``{"error": ...}`` plus ``X-Error-*`` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json(obj: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(obj).encode(), {"Content-Type": "application/json; charset=utf-8"})


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as ``oid``/``ETag`` of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


def _repo_not_found() -> HubError:
    return HubError(404, "Repository not found", "RepoNotFound")


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    gated: str | bool = False
    #: Oldest first; each {"id", "parent", "title", "message", "date", "author", "files": {path: entry}}, where an
    #: entry is {"sha256", "size", "lfs", "oid"} ("oid": git blob id of the content, or of the LFS pointer).
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]


class LocalHub:
    """A Hub-compatible server on ``http://127.0.0.1:<port>``, storing its repos under ``root``.

    ``tokens`` maps each accepted token to ``(user name, role)``, role ``"write"`` or ``"read"``. Every handled
    request is appended to ``requests_log`` as ``(method, path with query, status)``; requests no route matched are
    also listed in ``unhandled``.
    """

    def __init__(self, root: Path, port: int, tokens: dict[str, tuple[str, str]]):
        self.root, self.port, self.tokens = Path(root), port, dict(tokens)
        self.requests_log: list[tuple[str, str, int]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        for path in sorted((self.root / "repos").glob("*/*/*.json")):
            repo = Repo(**json.loads(path.read_text()))
            self._repos[(repo.repo_type, repo.repo_id)] = repo

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve in a daemon thread; the socket is listening when this returns."""
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    # -- Helpers for the tests ------------------------------------------------------------------------------------

    def repo_files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision (branch ``main`` or a commit sha): path -> content."""
        with self._lock:
            commit = self._commit_at(self._get(repo_type, repo_id), revision)
        return {path: self._read(entry) for path, entry in sorted(commit["files"].items())}

    def commits(self, repo_type: str, repo_id: str) -> list[dict[str, str]]:
        """The history of a repo, newest first: ``{"id", "title", "message", "date", "author"}`` dicts."""
        with self._lock:
            history = self._get(repo_type, repo_id).commits
            return [{k: c[k] for k in ("id", "title", "message", "date", "author")} for c in reversed(history)]

    # -- Storage ----------------------------------------------------------------------------------------------------

    def _get(self, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _repo_not_found()
        return repo

    def _save(self, repo: Repo) -> None:
        path = self.root / "repos" / repo.repo_type / f"{repo.repo_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(repo.__dict__))

    def _store(self, data: bytes, lfs: bool) -> dict[str, Any]:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.root / "objects" / sha256
        if not path.exists():
            tmp = path.with_name(f"{sha256}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        oid = git_blob_sha(lfs_pointer(sha256, len(data)) if lfs else data)
        return {"sha256": sha256, "size": len(data), "lfs": lfs, "oid": oid}

    def _read(self, entry: dict[str, Any]) -> bytes:
        return (self.root / "objects" / entry["sha256"]).read_bytes()

    def _commit(self, repo: Repo, files: dict[str, dict], title: str, message: str, author: str) -> dict[str, Any]:
        parent = repo.commits[-1]["id"] if repo.commits else None
        date = _now()
        content = json.dumps([parent, title, message, date, {p: e["oid"] for p, e in sorted(files.items())}])
        commit = {"id": hashlib.sha1(content.encode()).hexdigest(), "parent": parent, "title": title,
                  "message": message, "date": date, "author": author, "files": files}
        repo.commits.append(commit)
        self._save(repo)
        return commit

    @staticmethod
    def _commit_at(repo: Repo, revision: str) -> dict[str, Any]:
        if revision in ("main", "refs/heads/main"):
            return repo.commits[-1]
        found = [c for c in repo.commits if c["id"] == revision] if _SHA1.fullmatch(revision) else []
        if found:
            return found[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    # -- Auth -------------------------------------------------------------------------------------------------------

    def _user(self, authorization: str | None) -> tuple[str, str] | None:
        """``(name, role)`` of the request's bearer token, ``None`` if anonymous; 401 for an unknown token."""
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer").strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _readable(self, repo_type: str, repo_id: str, user: tuple[str, str] | None) -> Repo:
        repo = self._get(repo_type, repo_id)
        if repo.private and (user is None or user[0] != repo.owner):
            raise _repo_not_found()
        return repo

    @staticmethod
    def _check_write(namespace: str, user: tuple[str, str] | None, repo_type: str = "model") -> None:
        if user is None:
            raise HubError(401, "You must be authenticated with a write token to do this")
        if user[1] != "write":
            raise HubError(403, "This token has read-only access: a write token is needed")
        if user[0] != namespace:
            raise HubError(403, f'You don\'t have the rights to write a {repo_type} under the namespace "{namespace}"')

    def _writable(self, repo_type: str, repo_id: str, user: tuple[str, str] | None) -> Repo:
        self._check_write(repo_id.split("/")[0], user, repo_type)
        return self._readable(repo_type, repo_id, user)

    # -- Routing ----------------------------------------------------------------------------------------------------

    def _route(self, req: _Handler, segs: list[str]) -> Reply | None:
        method, user = req.command, self._user(req.headers.get("Authorization"))
        if segs[:1] == ["api"]:
            match method, segs[1:]:
                case "GET", ["whoami-v2"]:
                    if user is None:
                        raise HubError(401, "Invalid credentials in Authorization header")
                    return _json({"type": "user", "id": user[0], "name": user[0], "fullname": user[0], "orgs": [],
                                  "auth": {"type": "access_token",
                                           "accessToken": {"displayName": "test", "role": user[1]}}})
                case "POST", ["repos", "create"]:
                    return self._create_repo(req.json(), user)
                case "DELETE", ["repos", "delete"]:
                    body = req.json()
                    repo_type, repo_id = body.get("type") or "model", f"{body.get('organization')}/{body['name']}"
                    self._writable(repo_type, repo_id, user)
                    del self._repos[(repo_type, repo_id)]
                    (self.root / "repos" / repo_type / f"{repo_id}.json").unlink()
                    return _json({})
                case "GET", ["agent-harnesses"]:  # client telemetry: deliberately not served (nor cached)
                    return _json({"error": "Not served by the local hub"}, 404)
                case "POST", ["validate-yaml"]:
                    try:
                        _front_matter(req.json().get("content", ""))
                    except yaml.YAMLError as err:
                        return _json({"errors": [{"message": str(err)}], "warnings": []}, 400)
                    return _json({"errors": [], "warnings": []})
                case _, [kind, namespace, name, *tail] if kind in REPO_TYPES:
                    return self._repo_api(req, REPO_TYPES[kind], f"{namespace}/{name}", tail, user)
            return None
        if method == "PUT" and len(segs) == 2 and segs[0] == "_lfs":
            return self._lfs_upload(segs[1], req.body)
        repo_type = REPO_TYPES.get(segs[0]) if segs[0] in ("datasets", "spaces") else None
        segs = segs[1:] if repo_type else segs
        repo_type = repo_type or "model"
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self._readable(repo_type, f"{segs[0]}/{segs[1]}", user)
            return self._resolve(repo, segs[3], "/".join(segs[4:]), user, req.headers.get("Range"))
        if (method == "POST" and segs[1:2] and segs[1].endswith(".git")
                and segs[2:] == ["info", "lfs", "objects", "batch"]):
            return self._lfs_batch(self._writable(repo_type, f"{segs[0]}/{segs[1][:-4]}", user), req.json())
        return None

    def _repo_api(self, req: _Handler, repo_type: str, repo_id: str, tail: list[str], user: Any) -> Reply | None:
        match req.command, tail:
            case "GET", []:
                return self._info(self._readable(repo_type, repo_id, user), "main", req.query)
            case "GET", ["revision", revision]:
                return self._info(self._readable(repo_type, repo_id, user), revision, req.query)
            case "GET", ["tree", revision, *path]:
                repo = self._readable(repo_type, repo_id, user)
                return self._tree(repo, revision, "/".join(path).strip("/"), req.query)
            case "POST", ["paths-info", revision]:
                repo = self._readable(repo_type, repo_id, user)
                form = req.json() if "json" in req.headers.get("Content-Type", "") else parse_qs(req.body.decode())
                paths, expand = form.get("paths", []), form.get("expand", False)
                expand = expand if isinstance(expand, bool) else _truthy(expand)
                return self._paths_info(repo, revision, [p.strip("/") for p in paths], expand)
            case "GET", ["commits", revision]:
                repo = self._readable(repo_type, repo_id, user)
                head = repo.commits.index(self._commit_at(repo, revision))
                return _json([{"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                               "authors": [{"user": c["author"]}]} for c in reversed(repo.commits[: head + 1])])
            case "GET", ["refs"]:
                repo = self._readable(repo_type, repo_id, user)
                main = {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.commits[-1]["id"]}
                return _json({"branches": [main], "converts": [], "tags": [], "pullRequests": []})
            case "POST", ["preupload", revision]:
                commit = self._commit_at(self._writable(repo_type, repo_id, user), revision)
                return _json({"files": [self._upload_mode(f, commit["files"]) for f in req.json()["files"]]})
            case "POST", ["commit", revision]:
                if _truthy(req.query.get("create_pr")):
                    raise HubError(400, "Pull requests are not supported by the local hub")
                return self._apply_commit(self._writable(repo_type, repo_id, user), revision, req.body, user)
            case "PUT", ["settings"]:
                repo, body = self._writable(repo_type, repo_id, user), req.json()
                if "visibility" in body or "private" in body:
                    repo.private = body.get("visibility", "private" if body.get("private") else "public") == "private"
                repo.gated = body.get("gated", repo.gated)
                self._save(repo)
                return _json({})
        return None

    # -- Endpoints --------------------------------------------------------------------------------------------------

    def _create_repo(self, body: dict[str, Any], user: tuple[str, str] | None) -> Reply:
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Unsupported repo type: {repo_type}")
        if user is None:
            raise HubError(401, "You must be authenticated with a write token to do this")
        namespace = body.get("organization") or user[0]
        repo_id = f"{namespace}/{body['name']}"
        self._check_write(namespace, user, repo_type)
        url = f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self._repos:
            return _json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
        private = body.get("visibility", "private" if body.get("private") else "public") == "private"
        repo = Repo(repo_type, repo_id, private, _now())
        self._repos[(repo_type, repo_id)] = repo
        files = {".gitattributes": self._store(GITATTRIBUTES, lfs=False)}
        self._commit(repo, files, "initial commit", "", user[0])
        return _json({"url": url, "name": repo_id, "id": repo_id})

    def _info(self, repo: Repo, revision: str, query: dict[str, list[str]]) -> Reply:
        commit = self._commit_at(repo, revision)
        files = commit["files"]
        blobs = _truthy(query.get("blobs"))
        siblings = [{"rfilename": path} for path in sorted(files)]
        if blobs:
            for sibling in siblings:
                entry = files[sibling["rfilename"]]
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
                    sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": pointer_size}
        info = {"_id": repo.repo_id, "id": repo.repo_id, "author": repo.owner, "sha": commit["id"],
                "lastModified": commit["date"], "createdAt": repo.created_at, "private": repo.private,
                "gated": repo.gated, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                "usedStorage": sum(e["size"] for e in files.values()), "siblings": siblings}
        try:
            info["cardData"] = _front_matter(self._read(files["README.md"]).decode(errors="replace"))
        except (KeyError, yaml.YAMLError):  # no README, or invalid metadata
            pass
        if repo.repo_type == "space":
            info["sdk"] = "gradio"
        expand = query.get("expand", []) + query.get("expand[]", [])
        if expand:  # like the Hub: only the requested properties
            info = {k: v for k, v in info.items() if k in ("_id", "id", *expand)}
        return _json(info)

    def _entry(self, repo: Repo, commit: dict[str, Any], path: str, expand: bool) -> dict[str, Any]:
        files = commit["files"]
        if path in files:
            entry = files[path]
            out = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
            if entry["lfs"]:
                pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
                out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
        else:
            listing = json.dumps(sorted(_under(files, path).items()))
            out = {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}
        if expand:  # the last commit that changed this path
            index, current = repo.commits.index(commit), _under(files, path)
            while index > 0 and _under(repo.commits[index - 1]["files"], path) == current:
                index -= 1
            last = repo.commits[index]
            out["lastCommit"] = {"id": last["id"], "title": last["title"], "date": last["date"]}
        return out

    def _tree(self, repo: Repo, revision: str, base: str, query: dict[str, list[str]]) -> Reply:
        commit = self._commit_at(repo, revision)
        prefix = f"{base}/" if base else ""
        below = [p[len(prefix):].split("/") for p in commit["files"] if p.startswith(prefix)]
        if base and not below:
            raise HubError(404, f"Entry not found: {base}", "EntryNotFound")
        recursive, paths = _truthy(query.get("recursive")), set()
        for parts in below:
            depths = range(1, len(parts) + 1) if recursive else [1]
            paths.update(prefix + "/".join(parts[:depth]) for depth in depths)
        expand = _truthy(query.get("expand"))
        entries = [self._entry(repo, commit, path, expand) for path in sorted(paths)]
        return _json(sorted(entries, key=lambda e: (e["type"] == "file", e["path"])))

    def _paths_info(self, repo: Repo, revision: str, paths: list[str], expand: bool) -> Reply:
        commit = self._commit_at(repo, revision)
        found = [p for p in paths if p and (p in commit["files"] or _under(commit["files"], p))]
        return _json([self._entry(repo, commit, path, expand) for path in found])

    def _upload_mode(self, file: dict[str, Any], files: dict[str, dict]) -> dict[str, Any]:
        """Like the Hub: LFS for large or binary files and for paths ``.gitattributes`` sends to LFS."""
        gitattributes = self._read(files[".gitattributes"]).decode() if ".gitattributes" in files else ""
        patterns = [line.split()[0] for line in gitattributes.splitlines() if "filter=lfs" in line]
        path, name = file["path"], file["path"].rsplit("/", 1)[-1]
        lfs = (file["size"] >= LFS_THRESHOLD or b"\0" in base64.b64decode(file.get("sample", ""))
               or any(fnmatch.fnmatch(path if "/" in p else name, p) for p in patterns))
        existing = files.get(path)
        # The client skips unchanged files: it compares this oid to the sha256 (LFS) or git blob id (regular).
        oid = existing and (existing["sha256"] if existing["lfs"] else existing["oid"])
        return {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}

    def _apply_commit(self, repo: Repo, revision: str, body: bytes, user: tuple[str, str]) -> Reply:
        if revision not in ("main", "refs/heads/main"):
            raise HubError(404, f"Invalid rev id: {revision} (only the main branch can be committed to)",
                           "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        head = repo.commits[-1]
        if header.get("parentCommit") not in (None, head["id"]):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head["files"])
        for line in lines:
            key, value = line["key"], line["value"]
            path = value.get("path", "").strip("/")
            if key == "file":
                content = value["content"]
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                files[path] = self._store(data, lfs=False)
            elif key == "lfsFile":
                entry = self._lfs_entry(value["oid"])
                if entry is None:
                    raise HubError(422, f"LFS object {value['oid']} of {path} was not uploaded")
                files[path] = entry
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                doomed = _under(files, path)
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for doomed_path in doomed:
                    del files[doomed_path]
            elif key != "header":
                raise HubError(400, f"Unsupported commit operation: {key}")
        commit = self._commit(repo, files, header.get("summary", ""), header.get("description", ""), user[0])
        url = f"{self.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}/commit/{commit['id']}"
        return _json({"success": True, "commitOid": commit["id"], "commitUrl": url, "hookOutput": ""})

    def _lfs_entry(self, sha256: str) -> dict[str, Any] | None:
        path = self.root / "objects" / sha256
        if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not path.exists():
            return None
        size = path.stat().st_size
        return {"sha256": sha256, "size": size, "lfs": True, "oid": git_blob_sha(lfs_pointer(sha256, size))}

    def _lfs_batch(self, repo: Repo, body: dict[str, Any]) -> Reply:
        if body.get("operation") != "upload":
            raise HubError(400, "Only LFS uploads are supported by the local hub")
        objects = []
        for obj in body.get("objects", []):
            item = {"oid": obj["oid"], "size": obj["size"]}
            if self._lfs_entry(obj["oid"]) is None:  # already stored objects need no action
                item["actions"] = {"upload": {"href": f"{self.url}/_lfs/{obj['oid']}"}}
            objects.append(item)
        return Reply(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                     {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_upload(self, sha256: str, data: bytes) -> Reply:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise HubError(400, "The uploaded content does not match its sha256")
        self._store(data, lfs=True)
        return Reply(200)

    def _resolve(self, repo: Repo, revision: str, path: str, user: Any, range_header: str | None) -> Reply:
        commit = self._commit_at(repo, revision)
        headers = {"X-Repo-Commit": commit["id"]}
        if repo.gated and (user is None or user[0] != repo.owner):
            raise HubError(403, f"Access to {repo.repo_id} is restricted: you must have access to it",
                           "GatedRepo", headers)
        entry = commit["files"].get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers)
        data, size = self._read(entry), entry["size"]
        headers.update({"ETag": f'"{entry["oid"]}"', "Accept-Ranges": "bytes",
                        "Content-Type": "application/octet-stream"})
        if entry["lfs"]:  # the Hub names LFS files by their sha256
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(size)})
        match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header or "")
        if not match or match.groups() == ("", ""):
            return Reply(200, data, headers)
        start, end = match.groups()
        first, last = (size - int(end), size - 1) if not start else (int(start), int(end) if end else size - 1)
        if first >= size or first < 0 or last < first:
            return Reply(416, b"", {**headers, "Content-Range": f"bytes */{size}"})
        last = min(last, size - 1)
        return Reply(206, data[first : last + 1], {**headers, "Content-Range": f"bytes {first}-{last}/{size}"})


def _under(files: dict[str, dict], path: str) -> dict[str, str]:
    """path -> oid of the files at ``path`` or below it."""
    return {p: e["oid"] for p, e in files.items() if p == path or p.startswith(f"{path}/")}


def _front_matter(readme: str) -> dict[str, Any] | None:
    """The YAML metadata block at the top of a README (what the Hub shows as ``cardData``)."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", readme, re.DOTALL)
    data = yaml.safe_load(match.group(1)) if match else None
    return data if isinstance(data, dict) else None


class _Handler(BaseHTTPRequestHandler):
    """Parses a request, hands it to the hub's router and writes the reply (keep-alive, HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    hub: LocalHub

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet, see `requests_log`
        pass

    def json(self) -> Any:
        return json.loads(self.body or b"{}")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        segs = [unquote(s) for s in split.path.strip("/").split("/")]
        self.body = self._read_body()
        try:
            with self.hub._lock:
                reply = self.hub._route(self, segs)
            if reply is None:
                self.hub.unhandled.append((self.command, self.path))
                reply = _json({"error": f"Not supported by the local hub: {self.command} {split.path}"}, 404)
        except HubError as err:
            reply = _json({"error": err.message}, err.status)
            reply.headers.update({"X-Error-Message": err.message, **err.headers})
            if err.code:
                reply.headers["X-Error-Code"] = err.code
        except Exception as err:  # noqa: BLE001 - a server bug must reach the test as a 500, not a hang
            reply = _json({"error": f"Local hub failure: {err!r}", "traceback": traceback.format_exc()}, 500)
        self.hub.requests_log.append((self.command, self.path, reply.status))
        self.send_response(reply.status)
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle
