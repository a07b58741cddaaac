"""The gateway's request path, read top to bottom: one list of stages, one job each.

    authenticate -> admit -> read body -> limit -> cache lookup -> fall back -> forward

Each stage lives in :mod:`services.gateway.stages` and may answer by itself or call the rest;
whatever comes back is written by :func:`~services.gateway.stages.respond.write`. The gateway's
route table is generated from the fleet's route declarations (:data:`modelfleet.api.FLEET_ROUTES`),
every route served by this pipeline on the raw-ASGI path and documented by FastAPI from the
same request models the services validate with.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Sequence

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from modelfleet.api import FLEET_ROUTES, RouteSpec
from modelfleet.errors import exception_response
from modelfleet.routes import Handler, Route
from services.gateway.exchange import Exchange, Next, Outcome, Reply, Stage
from services.gateway.inbox import Inbox
from services.gateway.stages.respond import stream_body, write


class Pipeline:
    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)
        self._first = _compose(self.stages)

    async def handle(self, route: RouteSpec, scope: Scope, receive: Receive) -> Outcome:
        state = scope.get("state") or {}
        ex = Exchange(route, scope, receive, state.get("request_id") or uuid.uuid4().hex)
        return await self._first(ex)

    async def serve(self, route: RouteSpec, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request in raw ASGI (the hot path); a client that leaves cancels it."""
        inbox = Inbox(receive)
        task = asyncio.ensure_future(self.handle(route, scope, inbox.receive))
        inbox.watch(task)
        try:
            try:
                outcome = await task
            except asyncio.CancelledError:
                if inbox.client_left:
                    return  # nobody to answer; the backend call was cancelled with the task
                raise
            except ClientDisconnect:
                return
            except Exception as exc:
                await exception_response(exc)(scope, inbox.receive, send)
                return
            await write(outcome, scope, inbox.receive, send)
        finally:
            await inbox.close()

    def routes(self) -> list[Route]:
        """The gateway's route table: every fleet route, served by this pipeline."""
        return [
            Route(
                spec,
                self._fastapi_handler(spec),
                raw=True,
                asgi=functools.partial(self.serve, spec),
            )
            for spec in FLEET_ROUTES
        ]

    def _fastapi_handler(self, spec: RouteSpec) -> Handler:
        # What FastAPI would call if the raw path were switched off: the same pipeline, fed the
        # body FastAPI has already read.
        async def handler(_body: object, request: Request) -> Response:
            raw = await request.body()

            async def replay() -> Message:
                return {"type": "http.request", "body": raw, "more_body": False}

            outcome = await self.handle(spec, request.scope, replay)
            if isinstance(outcome, Reply):
                return Response(outcome.body, outcome.status, outcome.headers)
            return StreamingResponse(stream_body(outcome), outcome.status, outcome.headers)

        return handler


def _compose(stages: Sequence[Stage]) -> Next:
    async def end(ex: Exchange) -> Outcome:
        raise AssertionError("the last stage must answer")

    call: Next = end
    for stage in reversed(stages):
        call = functools.partial(stage, call_next=call)
    return call
