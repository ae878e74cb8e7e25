"""`python -m inference.ray_serve`: the same inference server, scaled out as a Ray Serve deployment.

    INFERENCE_TOKEN=... python -m inference.ray_serve --replicas 2 [--port 8001] [--models-dir DIR]

Every replica runs the whole app of `inference.app`: its models load in the app's lifespan, its own
batcher per model runs inside it, and Serve's HTTP proxy (on 127.0.0.1 unless --host says otherwise)
spreads requests over the replicas. A replica takes one GPU where the cluster has GPUs (so at most
one replica per GPU), else --threads CPUs (default 1); Serve adds replicas, up to --max-replicas,
when the requests in flight per replica pass --target-ongoing. Each response names the replica that
answered in an `X-Replica` header. Ctrl-C (or SIGTERM) shuts Serve and Ray down.

On a machine where only loopback may be contacted, run Ray inside a loopback-only network namespace
(Ray probes cloud metadata addresses and binds all interfaces when it starts):

    unshare -n sh -c 'ip link set lo up && exec python -m inference.ray_serve --replicas 2'

A prediction runs in the replica that received its create, and every replica can answer for it:
each publishes its predictions' changes to one named async actor, the `PredictionDirectory`
(inference/ray_records.py), which keeps their latest records (bounded as a replica's own store is),
hands a cancel to the replica that owns the prediction, and keeps uploads (`POST /v1/files`) and
the whole of each queued prediction in Ray's object store. A replica that stops (or is not heard
from for ten seconds) has its queued predictions run by another, once, and its running ones fail
saying why: none of those is billed.

For KubeRay's RayService (or `serve run` with a config file), `build` is the application:
`import_path: inference.ray_serve:build`, with this command's options as `args`
(`{"replicas": 2, "gpus-per-replica": 1}`); see deploy/ray/rayservice.yaml.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ray import serve
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.app import create_app
from inference.config import Settings, settings_from
from inference.errors import ConfigError
from inference.manifest import Manifest, discover
from inference.ray_replica import RayRecords, directory


@dataclass(frozen=True)
class Scale:
    min_replicas: int
    max_replicas: int
    target_ongoing: int  # requests in flight per replica that Serve's autoscaler aims for
    max_ongoing: int  # the most a replica is sent at once: every model's queue plus a running batch
    actor_options: dict[str, Any]


def scale_for(
    manifests: Sequence[Manifest],
    *,
    replicas: int,
    max_replicas: int | None,
    target_ongoing: int | None,
    gpus: int,
    threads: int | None,
    gpus_per_replica: float | None = None,
) -> Scale:
    if replicas < 1:
        raise ConfigError("--replicas must be at least 1")
    if gpus_per_replica:
        # GPU nodes that an autoscaler adds on demand are not counted now: trust the option.
        top = replicas if max_replicas is None else max_replicas
        options: dict[str, Any] = {"num_gpus": gpus_per_replica}
    elif gpus:
        top = gpus if max_replicas is None else max_replicas
        if top > gpus:
            raise ConfigError(f"--max-replicas {top}: the cluster has {gpus} GPUs, one per replica")
        options = {"num_gpus": 1}
    else:
        top = replicas if max_replicas is None else max_replicas
        options = {"num_cpus": threads or 1}
    if top < replicas:
        raise ConfigError(f"--max-replicas {top} is below --replicas {replicas}")
    # Serve's default of 5 requests in flight per replica would starve the batcher: let every
    # model's queue fill and a batch run, so a full queue answers 429 as it does without Serve.
    max_ongoing = max(5, sum(m.max_queue + m.max_batch_size for m in manifests))
    largest_batch = max((m.max_batch_size for m in manifests), default=1)
    return Scale(
        min_replicas=replicas,
        max_replicas=top,
        target_ongoing=target_ongoing or max(2, largest_batch),
        max_ongoing=max_ongoing,
        actor_options=options,
    )


class ReplicaHeader:
    """Adds `X-Replica: <Serve's replica id>` to every response, to see how load spreads."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._name: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._name is None:
            self._name = serve.get_replica_context().replica_id.unique_id.encode()
        name = self._name

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-replica", name)]
            await send(message)

        await self.app(scope, receive, send_named)


def deployment(settings: Settings, scale: Scale) -> serve.Application:
    @serve.deployment(
        name="inference",
        ray_actor_options=scale.actor_options,
        max_ongoing_requests=scale.max_ongoing,
        autoscaling_config={
            "min_replicas": scale.min_replicas,
            "initial_replicas": scale.min_replicas,
            "max_replicas": scale.max_replicas,
            "target_ongoing_requests": scale.target_ongoing,
        },
    )
    @serve.ingress(ReplicaHeader(create_app(settings, load_before_serving=True, remote_records=RayRecords)))
    class InferenceReplica:
        """All state (models, batchers, prediction records) is built in the app's lifespan, per
        replica; nothing lives here or in module globals. Other replicas' predictions are read and
        canceled through the directory that `main` starts."""

    return InferenceReplica.bind()  # type: ignore[attr-defined]  # a Deployment now


def _parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        prog="python -m inference.ray_serve",
        description="The inference server on Ray Serve.",
        epilog="Also takes every option of `python -m inference`: --host, --port, "
        "--models-dir, --threads (CPUs and torch threads per replica on CPU).",
    )
    parser.add_argument("--replicas", type=int, default=1, help="replicas at start and at least (default 1)")
    parser.add_argument(
        "--max-replicas",
        type=int,
        default=None,
        help="the autoscaler's ceiling (default: the GPU count, or --replicas on CPU)",
    )
    parser.add_argument(
        "--target-ongoing",
        type=int,
        default=None,
        help="requests in flight per replica before scaling up (default: largest batch)",
    )
    parser.add_argument(
        "--gpus-per-replica",
        type=float,
        default=None,
        help="GPUs each replica takes (default: 1 where the cluster has GPUs at start, else none); "
        "set it where GPU nodes join on demand, as under KubeRay",
    )
    args, rest = parser.parse_known_args(argv)
    return args, settings_from(rest)


def _scale(args: argparse.Namespace, settings: Settings, manifests: Sequence[Manifest]) -> Scale:
    import ray

    resources = ray.cluster_resources()
    scale = scale_for(
        manifests,
        replicas=args.replicas,
        max_replicas=args.max_replicas,
        target_ongoing=args.target_ongoing,
        gpus=int(resources.get("GPU", 0)),
        threads=settings.threads,
        gpus_per_replica=args.gpus_per_replica,
    )
    needed = scale.min_replicas * scale.actor_options.get("num_cpus", 0)
    if needed > resources.get("CPU", 0):
        raise ConfigError(
            f"{scale.min_replicas} replicas of {scale.actor_options['num_cpus']} CPU "
            f"need {needed} CPUs; the cluster has {resources.get('CPU', 0):g}"
        )
    return scale


def build(args: dict[str, Any]) -> serve.Application:
    """The application for a Serve config (KubeRay's RayService): `args` are the options of
    `python -m inference.ray_serve` without their dashes; the secrets come from the environment."""
    options, settings = _parse([f"--{key}={value}" for key, value in args.items()])
    return deployment(settings, _scale(options, settings, discover(settings.models_dir)))


def main(argv: Sequence[str] | None = None) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # read at ray.init: never send usage reports
    try:
        args, settings = _parse(argv)
        manifests = discover(settings.models_dir)
    except ConfigError as exc:
        sys.exit(f"inference.ray_serve: {exc}")
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    keeper = None
    try:
        scale = _scale(args, settings, manifests)
        for stop in (signal.SIGINT, signal.SIGTERM):  # even where SIGINT came ignored (`cmd &`)
            signal.signal(stop, signal.default_int_handler)
        keeper = directory(settings.prediction_ttl_s, settings.max_records)  # before any replica asks
        ray.get(keeper.__ray_ready__.remote())
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(deployment(settings, scale), name="inference", route_prefix="/")
        where = "GPU" if "num_gpus" in scale.actor_options else "CPU"
        print(
            f"inference server on http://{settings.host}:{settings.port} (Ray Serve, "
            f"{scale.min_replicas}-{scale.max_replicas} {where} replicas, models: {settings.models_dir})",
            flush=True,
        )
        while True:
            signal.pause()
    except ConfigError as exc:
        sys.exit(f"inference.ray_serve: {exc}")
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        if keeper is not None:  # detached: on a cluster this command only joined, it would stay
            ray.kill(keeper)
        ray.shutdown()
        print("inference.ray_serve: stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
