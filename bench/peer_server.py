"""The framework's floor, the `api` suite's peer: a minimal Quart (on trio) app under hypercorn with TLS, as a
node's API runs, answering each path with a body fixed in advance (the same rows the node answered) and a write
with a small canned answer; no authentication, validation or state.

`python -m bench.peer_server PORT CERT KEY BODIES_JSON` (BODIES_JSON: {path: body text}).
"""

from __future__ import annotations

import json
import sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

JSON_TYPE = "application/json;charset=UTF-8"


def make_app(bodies: dict[str, bytes]) -> QuartTrio:
    app = QuartTrio("peer")

    @app.route("/api2/json/<path:path>", methods=["GET", "POST", "PUT"])
    async def answer(path: str) -> Response:
        if request.method == "GET":
            return Response(bodies["/" + path], content_type=JSON_TYPE)
        form = await request.form
        return Response(json.dumps({"data": f"UPID:peer:{len(form)}"}), content_type=JSON_TYPE)

    return app


def main(port: str, cert: str, key: str, bodies_file: str) -> None:
    with open(bodies_file) as f:
        bodies = {path: body.encode() for path, body in json.load(f).items()}
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile, config.keyfile = cert, key
    config.accesslog = None
    trio.run(serve, make_app(bodies), config)


if __name__ == "__main__":
    main(*sys.argv[1:])
