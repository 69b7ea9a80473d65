"""`softprompt serve --engine ray`: the same HTTP API over N replicas with Ray Serve, routed by task.

Two deployments. Each `Replica` is today's single-process app (base model loaded once, its own batcher and
prompt keys/values), over a shared prompts folder (shared_store.py). The `Ingress` takes every HTTP request,
reads which task it is for, and hands it to a replica through Ray Serve's model multiplexing with the task as
model id: Ray sends it to a replica that already holds the task, so the task's prompt keys/values stay warm
there, and each replica holds at most `held_tasks` tasks, the least recently used evicted. /healthz and
/metrics go to every replica (a broadcast) and come back merged. A replica that dies or does not answer within
the request timeout gets a 503, never a hang.

On an existing Ray cluster: `serve run softprompt.serve.ray_engine:app_builder prompts=/shared/prompts
replicas=4` (any ServeConfig option as key=value; the prompts folder must be the same shared path on every node).
"""

import asyncio
import dataclasses
import json
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..utils.errors import SoftpromptError
from .config import ServeConfig
from .guards import error, error_body
from .relay import Forwarded, collected, merged_health, merged_metrics, relay
from .schemas import Limits
from .shared_store import stamp

try:
    from ray import serve
except ImportError:  # the optional extra; `serve_ray` says what to install
    serve = None

RAY_MISSING = "--engine ray needs Ray Serve: pip install 'softprompt[ray]'"
GATHERED = ("/healthz", "/metrics")  # answered by every replica, merged
PATHS = ("prompts", "admin_token_file", "api_key_file")  # made absolute: replicas start in other folders
# ServeConfig options that are not app_builder's to set on a cluster, and why.
PROXY = "Ray's proxy listens where `serve start --http-host/--http-port` put it"
NOT_HERE = {"host": PROXY, "port": PROXY, "engine": "app_builder always deploys replicas"}
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


class Lease:
    """A task as Ray's multiplexer holds it on a replica; Ray calls `__del__` when it evicts the task (least
    recently used), and the replica's store drops the prompt then."""

    def __init__(self, store, name: str) -> None:
        self.store, self.name, self.live = store, name, True

    def __del__(self) -> None:
        if self.live:
            self.live = False
            self.store.forget(self.name)


def replica_class(held_tasks: int):
    """The replica deployment's class (built here, since Ray reads the per-replica task bound from the
    multiplexing decorator)."""

    class Replica:
        def __init__(self, config: ServeConfig, threads: int) -> None:
            import torch

            from .server import build

            torch.set_num_threads(threads)
            self.app = build(config, held_tasks=held_tasks)
            self.store = self.app.state.store
            self.name = serve.get_replica_context().replica_id.unique_id

        @serve.multiplexed(max_num_models_per_replica=held_tasks)
        async def lease(self, task: str) -> Lease:
            return Lease(self.store, task)

        async def forward(self, request: Forwarded):
            """The request through this replica's app, streamed back: the head, then the body's chunks."""
            await self.held()
            async for part in relay(self.app, request):
                yield part

        async def answer(self, request: Forwarded) -> tuple[str, int, list, bytes]:
            """The whole answer in one piece (one Ray message, not a stream's several), named by replica."""
            await self.held()
            return (self.name, *await collected(self.app, request))

        async def held(self) -> None:
            """Mark the request's task held here, most recently used, for Ray's routing by task."""
            task = serve.get_multiplexed_model_id()
            if task:
                await self.lease(task)

    return Replica


def ingress_class():
    """The ingress deployment's class, on a FastAPI app of its own with one route that takes every path (the
    replicas' own /docs and /openapi.json are forwarded too)."""
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @serve.ingress(api)
    class Ingress(Gateway):
        @api.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
        async def route(self, request: Request) -> Response:
            return await self.handle(request)

    return Ingress


class Gateway:
    """Every HTTP request, handed to a replica as it came (relay.py), by task."""

    def __init__(self, replicas, config: ServeConfig, by_task: bool) -> None:
        self.replicas, self.timeout, self.by_task = replicas, config.request_timeout, by_task
        self.root = Path(config.prompts).absolute()
        self.limits = Limits.of(config)

    async def handle(self, request: Request) -> Response:
        forwarded = await Forwarded.of(request, self.limits)
        if forwarded.method == "GET" and forwarded.path in GATHERED:
            return await self.gathered(forwarded)
        task = forwarded.task() if self.by_task else ""
        if task and stamp(self.root / task) is None:
            task = ""  # unknown task: any replica answers 404 (after checking the key); no replica holds it
        replicas = self.replicas.options(multiplexed_model_id=task)
        if not forwarded.streamed():
            answer = replicas.answer.remote(forwarded)
            try:
                _, status, headers, body = await asyncio.wait_for(answer, self.timeout)
            except Exception as exc:  # a replica that died (Ray's errors) or did not answer in time
                answer.cancel()  # the replica drops the request rather than answering no one
                return self.unavailable(forwarded, exc)
            return _response(status, headers, body)
        stream = replicas.options(stream=True).forward.remote(forwarded)
        try:
            status, headers = await asyncio.wait_for(anext(stream), self.timeout)
        except Exception as exc:
            stream.cancel()
            return self.unavailable(forwarded, exc)
        response = StreamingResponse(self.rest(stream), status_code=status)
        response.raw_headers = headers
        return response

    async def rest(self, stream):
        """The body's chunks. A replica lost mid-answer ends the stream with an error event, as a failed batch
        does on one server (the head is already sent); a client that leaves cancels the replica's stream."""
        try:
            while True:
                try:
                    yield await asyncio.wait_for(anext(stream), self.timeout)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    body = error_body(503, f"replica unavailable ({type(exc).__name__}), retry", "/v1/completions")
                    yield f"data: {json.dumps(body)}\n\n".encode()
                    return
        finally:
            stream.cancel()

    async def gathered(self, forwarded: Forwarded) -> Response:
        """/healthz or /metrics of every live replica, merged; a refusal (401) is passed on as it is."""
        try:
            answers = await self.replicas.broadcast("answer", forwarded).results_async(
                timeout_s=self.timeout, return_exceptions=True
            )
        except Exception as exc:
            return self.unavailable(forwarded, exc)
        answers = [answer for answer in answers if not isinstance(answer, BaseException)]
        if not answers:
            return self.unavailable(forwarded, RuntimeError("no replica answered"))
        for _, status, headers, body in answers:
            if status != 200:
                return _response(status, headers, body)
        bodies = {name: body for name, _, _, body in answers}
        if forwarded.path == "/healthz":
            return JSONResponse(merged_health(bodies))
        return Response(merged_metrics(bodies), media_type="text/plain; version=0.0.4; charset=utf-8")

    def unavailable(self, forwarded: Forwarded, exc: BaseException) -> Response:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
        return error(503, f"replica unavailable ({reason}), retry", {"Retry-After": "1"}, forwarded.path)


def _response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
    """A replica's answer as it gave it (status, every header, body)."""
    response = Response(body, status_code=status)
    response.raw_headers = headers
    return response


def application(config: ServeConfig, by_task: bool = True):
    """The Ray Serve application: `config.replicas` copies of the app over `config`, each holding at most
    `config.held_tasks` tasks. `by_task=False` leaves routing to Ray's default balancing, task-blind
    (bench/serve_scale.py compares). `gpus_per_replica` (fractions allowed: 0.5 puts two replicas on a GPU) is
    what Ray reserves for each; Ray then shows each replica its GPUs alone, so the replica's `auto` device is
    its own GPU."""
    if serve is None:
        raise SoftpromptError(RAY_MISSING)
    config.validate()
    cpus = 1.0 if config.cpus_per_replica is None else config.cpus_per_replica
    replica = serve.deployment(
        replica_class(config.held_tasks),
        name="Replica",
        num_replicas=config.replicas,
        ray_actor_options={"num_cpus": cpus, "num_gpus": config.gpus_per_replica},
        max_ongoing_requests=1024,  # the replica's own batcher queues and refuses (503) past --max-queue
    )
    ingress = serve.deployment(
        ingress_class(), name="Ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024
    )
    return ingress.bind(replica.bind(config, max(1, int(cpus))), config, by_task)


def app_builder(args: dict):
    """For `serve run softprompt.serve.ray_engine:app_builder key=value ...` on an existing cluster: every
    ServeConfig option (the `serve` flags, with underscores) but those of NOT_HERE; each replica reserves 1
    CPU unless `cpus_per_replica` says otherwise."""
    for key in args:
        why = NOT_HERE.get(key.replace("-", "_"))
        if why:
            raise SoftpromptError(f"app_builder: {key}: not set here ({why})")
    return application(ServeConfig.from_dict(args, "app_builder"))


def serve_ray(config: ServeConfig) -> None:
    """Start (or join, with RAY_ADDRESS) a Ray cluster, deploy the app and serve until interrupted. On a local
    cluster the replicas share the machine's cores unless `cpus_per_replica` is given."""
    if serve is None:
        raise SoftpromptError(RAY_MISSING)
    config.validate()
    import ray

    address = os.environ.get("RAY_ADDRESS")
    cpus = os.cpu_count() or 1
    ray.init(address=address, num_cpus=None if address else cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": config.host, "port": config.port})
    settled = {key: str(Path(getattr(config, key)).absolute()) for key in PATHS if getattr(config, key)}
    if config.cpus_per_replica is None and not address:
        settled["cpus_per_replica"] = cpus / config.replicas
    app = application(dataclasses.replace(config, **settled))
    serve.run(app, name="softprompt", route_prefix="/", blocking=True)
