"""A local MemOS-compatible server: the demo's and the tests' MemOS, with fault injection.

It implements the MemOS Cloud routes this project uses (`/add/message`, `/get/message`,
`/search/memory`, `/get/status`, and the knowledge bases' `/create/knowledgebase`,
`/add/knowledgebase-file` and the rest) and the self-hosted server's `/product/add` and
`/product/search`, over real HTTP, with the same envelopes and error codes, and stores what
it accepts in SQLite. Like MemOS, it has no idempotency: the same request twice stores its
messages twice, which is what lets tests catch a loader that duplicates.

Fault injection (`POST /_dev/faults`, or CLI flags; see `Faults`), random choices drawn from
a seeded generator so a failing test can be replayed: latency and slow answers; a
requests-per-second and a tokens-per-minute limit answered in either of MemOS's styles
(HTTP 429 with Retry-After, or HTTP 200 with code 40300/40309); 5xx before the write;
commit-then-fail (the write happens, then a 500 or a dropped connection); failing
background extraction; and a script of faults for the next requests, including `hang`
(answer only after the client has given up).

One module a part: `app` (the FastAPI app, the background-thread server, `serve`), `state`
(what the routes share and the one preamble each route runs first), `adds` (the write path
both APIs share), `cloud` and `product` (the two APIs' routers), `knowledge` (the cloud's
knowledge bases: routes, limits, parsing), `control` (the `/_dev` routes), `faults`, `store`.
"""

from memos_etl.devserver.app import DevServer, create_app, free_port, serve
from memos_etl.devserver.faults import Faults
from memos_etl.devserver.store import Store

__all__ = ["DevServer", "Faults", "Store", "create_app", "free_port", "serve"]
