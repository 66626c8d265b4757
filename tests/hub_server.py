"""A minimal in-memory Hugging Face Hub for tests: just the HTTP endpoints that the real ``huggingface_hub``
client (2.x, Xet disabled) calls to create a repo, commit files (regular uploads only), create a branch or a
pull request, describe a repo, list its tree and serve its files. Model repos only; no LFS, no Xet.

    POST /api/repos/create                               {"name", "organization"} -> {"url"}; 409 if it exists
    POST /api/validate-yaml                              README front matter check -> {"errors", "warnings"}
    GET  /api/models/{repo}[/revision/{rev}]             {"id", "sha", "siblings": [{"rfilename"}]}
    GET  /api/models/{repo}/tree/{rev}[/{path}]          [{"type": "file", "path", "size", "oid"}] (one page)
    POST /api/models/{repo}/preupload/{rev}              every file {"uploadMode": "regular"}
    POST /api/models/{repo}/commit/{rev}[?create_pr=1]   NDJSON: header, then {"key": "file"} (base64) or
                                                         {"key": "deletedFile"}; -> {"commitUrl", "commitOid",
                                                         "pullRequestUrl"}; a PR commits to refs/pr/N
    POST /api/models/{repo}/branch/{branch}              {"startingPoint"?}; 409 if it exists
    HEAD|GET /{repo}/resolve/{rev}/{path}                the bytes, with ETag (the git blob sha1),
                                                         X-Repo-Commit and Content-Length

Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound) as the Hub's do, which the
client maps to its exception types. Path segments are unquoted one by one, so a revision such as
``refs/pr/1`` (sent as ``refs%2Fpr%2F1``) stays one segment. Write endpoints need a bearer token.

``HubServer.corrupt`` damages a stored file's bytes while keeping the size and ETag recorded at commit
time, as storage corruption would: the client sees the advertised metadata but receives other bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob: what the Hub sends as ETag and tree ``oid`` for a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.commit, self.extra = status, code, commit, extra


class Repo:
    """Commits are whole snapshots ``{path: (blob id, size)}``; refs map branch names (and refs/pr/N) to commits."""

    def __init__(self):
        self.commits: dict[str, dict[str, tuple[str, int]]] = {}
        self.refs: dict[str, str] = {}
        self.prs = 0

    def resolve(self, revision: str) -> str:
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def commit(self, parent: str | None, files: dict[str, tuple[str, int]]) -> str:
        oid = uuid.uuid4().hex + uuid.uuid4().hex[:8]  # 40 hex characters, like a git commit id
        self.commits[oid] = {**(self.commits[parent] if parent else {}), **files}
        return oid


class HubServer:
    """Start with ``start()`` (returns the endpoint URL), stop with ``stop()``. ``requests`` logs
    ``(method, path)`` of every request served."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # blob id -> stored bytes
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None
        self.url = ""

    def start(self) -> str:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    # ---------------------------------------------------------------- test hooks
    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        repo = self._repo(repo_id)
        return self.blobs[repo.commits[repo.resolve(revision)][path][0]]

    def corrupt(self, repo_id: str, path: str, revision: str = "main", damage=lambda b: b[:-10]) -> None:
        """Replace the stored bytes of ``path`` by ``damage(bytes)``; the recorded ETag and size stay."""
        repo = self._repo(repo_id)
        blob = repo.commits[repo.resolve(revision)][path][0]
        self.blobs[blob] = damage(self.blobs[blob])

    # ---------------------------------------------------------------- endpoints
    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.repos[repo_id]

    def create_repo(self, body: dict) -> dict:
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else f"user/{body['name']}"
        if repo_id in self.repos:
            raise HubError(409, "You already created this model repo", url=f"{self.url}/{repo_id}")  # the client reads the url
        repo = self.repos[repo_id] = Repo()
        gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        self.blobs[git_blob_id(gitattributes)] = gitattributes
        repo.refs["main"] = repo.commit(None, {".gitattributes": (git_blob_id(gitattributes), len(gitattributes))})
        return {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def info(self, repo_id: str, revision: str) -> dict:
        repo = self._repo(repo_id)
        sha = repo.resolve(revision)
        return {"id": repo_id, "sha": sha, "private": False, "siblings": [{"rfilename": p} for p in sorted(repo.commits[sha])]}

    def tree(self, repo_id: str, revision: str, prefix: str) -> list[dict]:
        repo = self._repo(repo_id)
        files = repo.commits[repo.resolve(revision)]
        return [{"type": "file", "path": p, "size": size, "oid": blob} for p, (blob, size) in sorted(files.items())
                if not prefix or p.startswith(prefix.rstrip("/") + "/")]

    def commit(self, repo_id: str, revision: str, ndjson: bytes, create_pr: bool) -> dict:
        repo = self._repo(repo_id)
        parent = repo.resolve(revision)
        lines = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(400, "the commit payload must start with a header line")
        files, deleted = {}, set()
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                data = base64.b64decode(value["content"])
                self.blobs[git_blob_id(data)] = data
                files[value["path"]] = (git_blob_id(data), len(data))
            elif line["key"] == "deletedFile":
                deleted.add(value["path"])
            else:
                raise HubError(400, f"unsupported commit operation {line['key']!r} (this server takes regular files only)")
        oid = repo.commit(parent, files)
        for path in deleted:
            repo.commits[oid].pop(path, None)
        answer = {"commitOid": oid, "commitUrl": f"{self.url}/{repo_id}/commit/{oid}"}
        if create_pr:
            repo.prs += 1
            repo.refs[f"refs/pr/{repo.prs}"] = oid
            answer["pullRequestUrl"] = f"{self.url}/{repo_id}/discussions/{repo.prs}"
        else:
            if revision not in repo.refs:
                raise HubError(400, f"cannot commit to {revision!r}: not a branch")
            repo.refs[revision] = oid
        return answer

    def create_branch(self, repo_id: str, branch: str, body: dict) -> dict:
        repo = self._repo(repo_id)
        if branch in repo.refs:
            raise HubError(409, f"Branch {branch} already exists")
        repo.refs[branch] = repo.resolve(body.get("startingPoint") or "main")
        return {}

    def resolve_file(self, repo_id: str, revision: str, path: str) -> tuple[bytes, dict[str, str]]:
        repo = self._repo(repo_id)
        sha = repo.resolve(revision)
        if path not in repo.commits[sha]:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit=sha)
        blob, size = repo.commits[sha][path]
        headers = {"ETag": f'"{blob}"', "X-Repo-Commit": sha, "Content-Length": str(size)}
        return self.blobs[blob], headers


def _validate_yaml(body: dict) -> dict:
    content = body.get("content", "")
    if content.startswith("---"):
        try:
            yaml.safe_load(content.split("---")[1])
        except yaml.YAMLError as err:
            raise HubError(400, "Invalid YAML") from err
    return {"errors": [], "warnings": []}


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_HEAD(self):
            self._serve("HEAD")

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            query = parse_qs(url.query)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hub.requests.append((method, url.path))
            try:
                with hub.lock:
                    status, payload, headers = 200, *self._route(method, parts, query, body)
            except HubError as err:
                status, headers = err.status, {"X-Error-Message": str(err)}
                payload = json.dumps({"error": str(err), **err.extra}).encode()
                if err.code:
                    headers["X-Error-Code"] = err.code
                if err.commit:
                    headers["X-Repo-Commit"] = err.commit
            self.send_response(status)
            if method == "GET" or "Content-Length" not in headers:  # HEAD: the size recorded at commit time
                headers["Content-Length"] = str(len(payload))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(payload)

        def _route(self, method, parts, query, body) -> tuple[bytes, dict[str, str]]:
            as_json = {"Content-Type": "application/json"}
            if method == "POST" and not self.headers.get("Authorization", "").startswith("Bearer "):
                raise HubError(401, "Invalid credentials in Authorization header")
            if method == "POST" and parts == ["api", "repos", "create"]:
                return json.dumps(hub.create_repo(json.loads(body))).encode(), as_json
            if method == "POST" and parts == ["api", "validate-yaml"]:
                return json.dumps(_validate_yaml(json.loads(body))).encode(), as_json
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
                if method == "GET" and (rest == [] or (len(rest) == 2 and rest[0] == "revision")):
                    return json.dumps(hub.info(repo_id, rest[1] if rest else "main")).encode(), as_json
                if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
                    return json.dumps(hub.tree(repo_id, rest[1], "/".join(rest[2:]))).encode(), as_json
                if method == "POST" and rest[:1] == ["preupload"] and len(rest) == 2:
                    hub.info(repo_id, rest[1])  # the repo and revision must exist
                    files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                             for f in json.loads(body)["files"]]
                    return json.dumps({"files": files}).encode(), as_json
                if method == "POST" and rest[:1] == ["commit"] and len(rest) == 2:
                    answer = hub.commit(repo_id, rest[1], body, create_pr=query.get("create_pr") == ["1"])
                    return json.dumps(answer).encode(), as_json
                if method == "POST" and rest[:1] == ["branch"] and len(rest) == 2:
                    return json.dumps(hub.create_branch(repo_id, rest[1], json.loads(body or b"{}"))).encode(), as_json
            if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                return hub.resolve_file(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            raise HubError(404, f"{method} {self.path}: not implemented by the test hub")

    return Handler
