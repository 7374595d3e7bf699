"""The review server: a Starlette app served by uvicorn on 127.0.0.1 (a free port), every
request checked against a random access token (``secrets.token_urlsafe``; 403 without it).

It serves only the page (one static HTML file of this package), the queue state, the
decisions endpoint and PNGs of the particles under review addressed by their position: no
path from a request ever reaches the file system, so nothing outside the review escapes."""

from __future__ import annotations

import getpass
import math
import os
import secrets
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipoclass.errors import LipoclassError
from lipoclass.quantify import REVIEW_SPECIAL
from lipoclass.review.queues import QUEUES, Queue, build_queues
from lipoclass.review.render import Renderer
from lipoclass.review.source import ReviewSource
from lipoclass.review.store import ReviewLog

__all__ = ["ReviewConfig", "ReviewSession", "create_app", "serve"]

PAGE = Path(__file__).with_name("static") / "review.html"


@dataclass(frozen=True)
class ReviewConfig:
    """``queue``: the queue the page opens on (None: the first one available, in ``QUEUES``
    order); ``audit_size`` and ``seed``: the audit sample (``draw_audit``); ``reviewer``: the
    name written with each decision (default: the login name); ``port``: 0 = a free one."""

    queue: str | None = None
    audit_size: int = 200
    seed: int = 0
    reviewer: str | None = None
    port: int = 0

    def __post_init__(self) -> None:
        if self.queue is not None and self.queue not in QUEUES:
            raise ValueError(f"queue must be one of {', '.join(QUEUES)}, got {self.queue!r}")
        if self.audit_size < 1:
            raise ValueError(f"audit size must be at least 1, got {self.audit_size}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.reviewer is not None and (not self.reviewer.strip() or "\n" in self.reviewer):
            raise ValueError("reviewer must be a non-empty name on one line")


class ReviewSession:
    """Everything one server holds: the source, its queues, the decisions log, the renderer."""

    def __init__(
        self,
        source: ReviewSource,
        reviews: str | os.PathLike[str],
        config: ReviewConfig | None = None,
    ) -> None:
        self.cfg = config or ReviewConfig()
        self.source = source
        self.queues: dict[str, Queue] = build_queues(
            source.items,
            source.classes,
            source.probs,
            source.members,
            audit_size=self.cfg.audit_size,
            seed=self.cfg.seed,
            with_label_issues=source.kind == "dataset",
        )
        if self.cfg.queue is not None and self.cfg.queue not in self.queues:
            have = ", ".join(self.queues) or "none"
            raise LipoclassError(
                f"{source.path}: no {self.cfg.queue} queue here (available: {have})"
            )
        self.default_queue = self.cfg.queue or next(iter(self.queues), "")
        if not self.default_queue:
            raise LipoclassError(f"{source.path}: nothing to review (no particle)")
        self.reviewer = self.cfg.reviewer or _login()
        self.log = ReviewLog(
            reviews, ids={it.id for it in source.items}, labels=set(source.classes)
        )
        self.renderer = Renderer(source)
        self.token = secrets.token_urlsafe(24)

    def state(self, queue: str) -> dict[str, Any]:
        if queue not in self.queues:
            raise LipoclassError(f"no queue {queue!r}")
        q = self.queues[queue]
        items = []
        for pos, i in enumerate(q.order):
            it = self.source.items[i]
            d = self.log.current.get((queue, it.id))
            score = q.score[pos]
            items.append(
                {
                    "i": i,
                    "id": it.id,
                    "micrograph": it.micrograph,
                    "label": it.label,
                    "pred": it.pred,
                    "prob": None if math.isnan(it.prob) else round(it.prob, 4),
                    "flagged": it.flagged,
                    "score": None if math.isnan(score) else float(f"{score:.4g}"),
                    "decision": d.new_label if d else "",
                    "by": d.reviewer if d else "",
                }
            )
        return {
            "source": str(self.source.path),
            "kind": self.source.kind,
            "classes": list(self.source.classes),
            "special": list(REVIEW_SPECIAL),
            "queues": list(self.queues),
            "queue": queue,
            "score_name": q.score_name,
            "reviewer": self.reviewer,
            "reviews": str(self.log.path),
            "items": items,
        }

    def decide(self, queue: str, i: int, label: str, expect: str | None) -> dict[str, Any]:
        if queue not in self.queues:
            raise LipoclassError(f"no queue {queue!r}")
        if not 0 <= i < len(self.source.items):
            raise LipoclassError(f"no particle at position {i}")
        it = self.source.items[i]
        d, conflict = self.log.decide(
            it.id, it.micrograph, queue, it.label, label, self.reviewer, expect
        )
        out: dict[str, Any] = {"saved": True, "id": d.id, "decision": d.new_label, "time": d.time}
        if conflict is not None:
            out["conflict"] = {
                "label": conflict.new_label,
                "by": conflict.reviewer,
                "time": conflict.time,
            }
        return out


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no login name (containers)
        return "reviewer"


def create_app(session: ReviewSession) -> Any:
    """The Starlette application of ``session`` (token checked on every request)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    page = PAGE.read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        queue = request.query_params.get("queue") or session.default_queue
        try:
            return JSONResponse(session.state(queue))
        except LipoclassError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)

    async def decide(request: Request) -> Response:
        try:
            body = await request.json()
            queue, i, label = str(body["queue"]), int(body["i"]), str(body["label"])
            expect = body.get("expect")
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "expected JSON {queue, i, label}"}, status_code=400)
        try:  # the fsync happens in a worker thread, the answer only after it
            out = await run_in_threadpool(
                session.decide, queue, i, label, None if expect is None else str(expect)
            )
        except LipoclassError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(out)

    def picture(kind: str) -> Any:
        async def endpoint(request: Request) -> Response:
            i = int(request.path_params["i"])
            if not 0 <= i < len(session.source.items):
                return PlainTextResponse("no such particle", status_code=404)
            make = session.renderer.crop if kind == "crop" else session.renderer.context
            try:
                data = await run_in_threadpool(make, i)
            except LipoclassError as exc:
                return PlainTextResponse(str(exc), status_code=500)
            return Response(
                data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
            )

        return endpoint

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/decide", decide, methods=["POST"]),
        Route("/crop/{i:int}.png", picture("crop")),
        Route("/context/{i:int}.png", picture("context")),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_TokenGate, token=session.token)])


class _TokenGate:
    """ASGI middleware: 403 for every request without the session's token (query parameter
    ``token`` or header ``X-Review-Token``), before any route runs."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            from starlette.requests import Request
            from starlette.responses import PlainTextResponse

            request = Request(scope)
            got = request.query_params.get("token") or request.headers.get("x-review-token") or ""
            if not secrets.compare_digest(got.encode(), self.token):
                response = PlainTextResponse("forbidden: wrong or missing access token", 403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def serve(session: ReviewSession, *, open_browser: bool = True) -> None:
    """Serve the page until interrupted: bind 127.0.0.1 on the configured or a free port,
    print the URL (with the token), open the browser where there is one."""
    try:
        import uvicorn
    except ImportError:
        raise LipoclassError(
            "lipoclass review needs uvicorn: pip install 'lipoclass[review]'"
        ) from None
    app = create_app(session)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", session.cfg.port))
        sock.listen(128)  # connections queue from now on, before uvicorn has started
    except OSError as exc:
        sock.close()
        raise LipoclassError(
            f"cannot listen on 127.0.0.1:{session.cfg.port} ({exc.strerror})"
        ) from None
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/?token={session.token}"
    n = {k: len(q.order) for k, q in session.queues.items()}
    print(f"review of {session.source.path}: " + ", ".join(f"{k} {v}" for k, v in n.items()))
    print(f"decisions: {session.log.path}")
    print(f"review page: {url}", flush=True)
    print("(Ctrl-C stops the server; every decision is already on disk)", flush=True)
    if open_browser:
        import webbrowser

        threading.Timer(0.5, lambda: webbrowser.open(url)).start()
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        session.log.close()
        sock.close()
        sys.stdout.flush()
