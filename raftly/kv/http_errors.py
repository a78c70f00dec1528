"""Malformed HTTP (a request aiohttp's parser refuses) answered like every other API error.

aiohttp answers a request it cannot parse (a bad request line, an invalid header, a broken
chunked body, a Content-Length beside a Transfer-Encoding, ...) itself, before any handler or
middleware runs: with a ``text/plain`` body that quotes the offending bytes back, and after
logging the parser's exception with its traceback at ERROR. On an open port that is one
traceback per hostile request, and an answer clients of this API cannot parse as its errors.
``JsonErrorRunner`` makes those answers the API's JSON error (``{"error": ...}``, no echo of the
request) and logs one line at INFO; an unexpected exception (a 500) is still logged with its
traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

__all__ = ["JsonErrorRunner"]

logger = logging.getLogger("raftly.kv.http")


class _JsonErrorHandler(RequestHandler):
    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        # The parser's first line says what was wrong; the rest echoes the client's bytes.
        text = str(getattr(exc, "message", None) or exc or message or "")
        reason = text.strip().split("\n", 1)[0][:200] or "malformed request"
        logger.info("refused a malformed request from %s: %s", request.remote, reason)
        if request.writer.output_size > 0:
            raise ConnectionError("a response is already under way; closing instead")
        body = json.dumps({"error": f"malformed HTTP request: {reason}"}) + "\n"
        response = web.Response(status=status, text=body, content_type="application/json")
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An ``AppRunner`` whose connections answer malformed HTTP with a JSON error."""

    async def _make_server(self) -> web.Server:
        server: Any = await super()._make_server()
        # aiohttp builds its Server itself (Application._make_handler); only the handler
        # factory changes, so the class is swapped rather than the construction copied.
        server.__class__ = _JsonErrorServer
        return server  # type: ignore[no-any-return]
