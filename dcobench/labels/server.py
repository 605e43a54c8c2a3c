"""The labelling page's server: standard library only, bound to 127.0.0.1.

    GET  /               page.html (no external assets: it works without a network)
    GET  /api/items      the blind items in sample order, each with this labeller's latest answers
    GET  /img/item/<id>  a sampled image, by item id (its cell folder and file name would reveal the
                         method and the seed)
    GET  /img/ref/<id>   a reference image of the sample, by the hash of its path
    GET  /img/<path>     any other image file inside the run folder
    POST /api/answer     {item, question, answer} -> store.record; the saved row back

The port is stable per run folder (`stable_port`: a hash of its resolved path into 20000-29999), so
a restarted server comes back at the address an open page already has; when that port is taken a
free one is used, and `RUN/labels/server.json` always holds the current address, so the new one can
be found (the label command prints it next to the old one).

Only files that are images and lie inside the run folder, or are the sample's references, are ever
served: a path is resolved (symlinks and `..` included) before it is checked. A bad item, question
or answer is HTTP 400 with a one-line message; the page shows it.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import DcoError
from ..store import atomic_write_json, read_json
from . import store
from .sample import blind, reference_url

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif", ".bmp": "image/bmp"}
MAX_BODY = 64 * 1024  # an answer is a few dozen bytes; anything large is not one
# below Linux's ephemeral range (32768-60999), so a stable port is rarely taken by an outgoing connection
PORTS = range(20000, 30000)


class LabelServer(ThreadingHTTPServer):
    """The server and what its handlers read: the run, the stored sample and the labeller."""

    daemon_threads = True
    allow_reuse_address = True  # a restart rebinds at once although old connections linger in TIME_WAIT
    allow_reuse_port = False  # but never shares the port with a live server (a second one would steal requests)

    def __init__(self, address, run_dir: Path, sample: dict, labeller: str):
        self.run_dir = Path(run_dir).resolve()
        self.labeller = store.check_labeller(labeller)
        self.items = {it["item"]: it for it in sample["items"]}
        self.order = [it["item"] for it in sample["items"]]
        self.files = {f"item/{i}{Path(it['image']).suffix.lower()}": self.run_dir / it["image"]
                      for i, it in self.items.items()}
        for it in sample["items"]:
            for ref in it["references"]:
                path = Path(ref) if Path(ref).is_absolute() else self.run_dir / ref
                self.files[reference_url(ref).removeprefix("img/")] = path
        self.page = resources.files(__package__).joinpath("page.html").read_bytes()
        self.write_lock = threading.Lock()  # rows of one process in order; the file lock guards the rest
        super().__init__(address, Handler)

    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def items_payload(self) -> dict:
        latest = store.answers(self.run_dir, self.labeller)
        items = [{**blind(self.items[i]), "answers": {q: latest[(i, q)] for q in store.QUESTIONS if (i, q) in latest}}
                 for i in self.order]
        return {"labeller": self.labeller, "questions": store.QUESTIONS, "answers": list(store.ANSWERS),
                "items": items}

    def image_file(self, rel: str) -> Path | None:
        """The file behind /img/<rel>, or None unless it is an image inside the run or a reference."""
        known = self.files.get(rel)
        path = (known or self.run_dir / rel).resolve()
        if path.suffix.lower() not in IMAGE_TYPES or not path.is_file():
            return None
        if known is None and not path.is_relative_to(self.run_dir):
            return None
        return path

    def answer(self, body: dict) -> dict:
        if not isinstance(body, dict):
            raise DcoError("expected a JSON object {item, question, answer}")
        item = self.items.get(body.get("item")) if isinstance(body.get("item"), str) else None
        if item is None:
            raise DcoError(f"item {body.get('item')!r}: not in this sample")
        with self.write_lock:
            return store.record(self.run_dir, self.labeller, item, body.get("question"), body.get("answer"))


class Handler(BaseHTTPRequestHandler):
    server: LabelServer

    def log_message(self, format, *args):  # one line per image fetched would bury the URL
        pass

    def send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # answers change; a cached /api/items would not resume
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, obj) -> None:
        self.send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self):
        path = unquote(urlparse(self.path).path)
        if path in ("/", "/index.html"):
            return self.send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        if path == "/api/items":
            return self.send_json(HTTPStatus.OK, self.server.items_payload())
        if path.startswith("/img/"):
            found = self.server.image_file(path.removeprefix("/img/"))
            if found is not None:
                return self.send(HTTPStatus.OK, found.read_bytes(), IMAGE_TYPES[found.suffix.lower()])
        self.send_json(HTTPStatus.NOT_FOUND, {"error": f"{path}: not found"})

    def do_POST(self):
        if urlparse(self.path).path != "/api/answer":
            return self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        size = int(self.headers.get("Content-Length") or 0)
        if not 0 < size <= MAX_BODY:
            return self.send_json(HTTPStatus.BAD_REQUEST, {"error": "expected a small JSON body"})
        try:
            row = self.server.answer(json.loads(self.rfile.read(size)))
        except (ValueError, DcoError) as e:  # json's errors are ValueErrors
            return self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        self.send_json(HTTPStatus.OK, row)


def stable_port(run_dir: Path) -> int:
    """The run folder's own port: the same on every start, so an open page finds a restarted server."""
    digest = hashlib.sha1(str(Path(run_dir).resolve()).encode()).digest()
    return PORTS[int.from_bytes(digest[:4], "big") % len(PORTS)]


def _bind(run_dir: Path, sample: dict, labeller: str, port: int) -> LabelServer:
    try:
        return LabelServer(("127.0.0.1", port), run_dir, sample, labeller)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise DcoError(f"port {port} is in use; pick another --port, or omit it: the run's usual port, "
                           "else a free one") from e
        if e.errno == errno.EACCES:
            raise DcoError(f"port {port} needs privileges to bind; pick a port above 1023 or omit --port") from e
        raise


def make_server(run_dir: Path, sample: dict, labeller: str, port: int | None = None) -> LabelServer:
    """Bind 127.0.0.1:port. None: the run's stable port, or a free one when that is taken (then
    `server.moved` is True); 0: any free port; N: N, and a port that is taken is the user's to change."""
    if port is not None:
        server = _bind(run_dir, sample, labeller, port)
        server.usual_port, server.moved = port, False
        return server
    usual = stable_port(run_dir)
    try:
        server = _bind(run_dir, sample, labeller, usual)
    except DcoError:  # taken (another labeller's server on this run, or another program)
        server = _bind(run_dir, sample, labeller, 0)
    server.usual_port, server.moved = usual, server.server_address[1] != usual
    return server


def address_path(run_dir: Path) -> Path:
    return Path(run_dir) / "labels" / "server.json"


def last_address(run_dir: Path) -> dict:
    """What the last server of this run wrote to server.json ({} when none did, or it is unreadable:
    it is a hint for finding the page, never needed to label)."""
    try:
        found = read_json(address_path(run_dir))
    except (OSError, ValueError, DcoError):
        return {}
    return found if isinstance(found, dict) else {}


def write_address(server: LabelServer) -> dict:
    """Record the server's address in RUN/labels/server.json (atomically) and return what was written."""
    info = {"url": server.url(), "port": server.server_address[1], "usual_port": server.usual_port,
            "labeller": server.labeller, "pid": os.getpid(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(address_path(server.run_dir), info)
    return info
