"""Every model the server serves: each folder loaded once at start, then new versions loaded
beside the running one (hot reload), optionally taking a weighted share of traffic (canary), and
old versions retired only once their queued and running work is done."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.to_thread

from inference import files
from inference.batcher import Batcher
from inference.catalogue import example_prediction
from inference.config import Settings
from inference.errors import ConfigError, InvalidInput, NotFound, Unavailable
from inference.loader import load
from inference.manifest import Manifest, discover, load_manifest
from inference.metrics import Metrics
from inference.predictions import Prediction, PredictionStore, RemoteRecords
from inference.uploads import Uploads
from inference.webhooks import Webhooks

log = logging.getLogger("inference")
DRAIN_S = 30.0  # deploy/ gives a stopping pod longer than this (terminationGracePeriodSeconds)


class Models:
    def __init__(self, settings: Settings, remote: RemoteRecords | None = None) -> None:
        self.settings = settings
        self.remote = remote  # other replicas' predictions, under Ray Serve; None for one server
        self.manifests: dict[str, Manifest] = {m.name: m for m in discover(settings.models_dir)}
        self.versions: dict[str, Batcher] = {}  # every loaded version, by version id
        self.canaries: dict[str, tuple[str, float]] = {}  # name -> (version id, share of traffic)
        self.problems: dict[str, str] = {}
        self.examples: dict[str, Prediction] = {}  # version id -> its first example's prediction
        self.webhooks = (
            None
            if settings.webhook_secret is None
            else Webhooks(settings.webhook_secret, backoff_s=settings.webhook_backoff_s)
        )
        self.store = PredictionStore(
            ttl_s=settings.prediction_ttl_s,
            max_finished=settings.max_records,
            on_finish=lambda p: self.notify(p, "completed"),
        )
        self.uploads = (
            Uploads(max_bytes=settings.max_upload_bytes)
            if remote is None
            else remote.uploads(settings.max_upload_bytes)
        )
        self.metrics = Metrics(lambda: {(b.model.ref, v[:12]): b.depth for v, b in self.versions.items()})
        self._random = random.Random()
        # Every model predicts on this one thread. torch's CPU kernels run on OpenMP, which keeps a
        # pool of threads per thread that starts parallel work; with more pooled threads than
        # cores it stops spin-waiting between kernels, and each of a network's layers then waits
        # for its threads to wake. One pool for the process keeps them spinning. On CPU, two
        # models predicting at once would only share the same cores anyway.
        self._predict_thread = ThreadPoolExecutor(1, thread_name_prefix="predict")

    async def load_all(self) -> None:
        for manifest in list(self.manifests.values()):
            try:
                await self._load(manifest)
            except Exception as exc:
                log.exception("model %s failed to load", manifest.name)
                self.problems[manifest.name] = f"failed to load: {exc}"

    async def _load(self, manifest: Manifest) -> Batcher:
        # setup() runs on a thread that ends with it, taking any OpenMP pool it started along.
        loader = ThreadPoolExecutor(1, thread_name_prefix=f"load-{manifest.name}")
        try:
            model = await asyncio.get_running_loop().run_in_executor(
                loader,
                functools.partial(
                    load,
                    manifest,
                    self.settings.owner,
                    trust_precision=self.settings.trust_precision,
                    threads=self.settings.threads,
                ),
            )
        finally:
            loader.shutdown(wait=False)
        batcher = Batcher(
            model,
            self.store,
            self.metrics,
            on_start=lambda p: self.notify(p, "start"),
            executor=self._predict_thread,
        )
        warm = await batcher.warm_up(_example_inputs(manifest, self.settings))
        example = None if warm is None else example_prediction(manifest, self.settings.owner, *warm)
        if example is not None:
            self.examples[manifest.version] = example
        batcher.start()
        self.versions[manifest.version] = batcher
        log.info(
            "model ready",
            extra={"fields": {"model": model.ref, "version": manifest.version, "precision": model.precision}},
        )
        return batcher

    async def reload(self, name: str, canary_weight: float | None = None) -> dict[str, Any]:
        """Loads the folder as it is now. Unchanged: nothing happens. Changed: the new version
        serves new requests (or `canary_weight` of them) while the old one finishes its work."""
        current = self._named(name)
        fresh = await anyio.to_thread.run_sync(load_manifest, current.folder)
        if fresh.version in self.versions:
            return {"model": name, "version": fresh.version, "changed": False}
        try:
            await self._load(fresh)
        except Exception as exc:
            log.exception("the new version of %s failed to load", name)
            # The version that serves now goes on serving.
            raise ConfigError(f"the new version of {name} failed to load: {exc}") from None
        self.problems.pop(name, None)
        if canary_weight:
            self.canaries[name] = (fresh.version, canary_weight)
        else:
            await self.promote(name, fresh.version)
        return {"model": name, "version": fresh.version, "changed": True, "canary_weight": canary_weight}

    async def promote(self, name: str, version: str) -> None:
        """Makes `version` the default; the previous default is retired once it is idle."""
        if version not in self.versions or self.versions[version].model.manifest.name != name:
            raise NotFound(f"model {name} has no loaded version {version!r}")
        previous = self.manifests[name].version
        self.manifests[name] = self.versions[version].model.manifest
        self.canaries.pop(name, None)
        if previous != version and previous in self.versions:
            retiring = self.versions.pop(previous)
            await retiring.stop(drain=True)
            log.info("version retired", extra={"fields": {"model": name, "version": previous}})

    def publish(self, prediction: Prediction) -> None:
        if self.remote is not None:
            self.remote.publish(prediction)

    def cancel(self, prediction: Prediction) -> None:
        if self.store.finish(prediction, "canceled"):
            self.metrics.predictions.labels(prediction.model, "canceled").inc()

    def cancel_here(self, prediction_id: str) -> dict[str, Any] | None:
        """A cancel that another replica received for a prediction of this one."""
        prediction = self.store.get(prediction_id)
        if prediction is None:
            return None
        self.cancel(prediction)
        return prediction.to_json(prediction.base_url)

    def notify(self, prediction: Prediction, event: str) -> None:
        self.publish(prediction)
        if self.webhooks is None:
            return
        self.webhooks.notify(prediction, event)
        if event == "completed" and self.settings.notify_url:
            self.webhooks.send(self.settings.notify_url, prediction, event)

    async def close(self) -> None:
        # A stopping server (SIGTERM from a rollout or a scale-down, Ctrl-C) first finishes what it
        # accepted, for at most DRAIN_S; whatever is still queued then fails, saying so.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(batcher.stop(drain=True) for batcher in self.versions.values())), DRAIN_S
            )
        for batcher in self.versions.values():
            await batcher.stop()
        await asyncio.to_thread(self._predict_thread.shutdown, wait=True, cancel_futures=True)
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.remote is not None:
            await self.remote.close()
        self.uploads.close()

    @property
    def ready(self) -> bool:
        return all(m.version in self.versions for m in self.manifests.values())

    @property
    def loaded_names(self) -> list[str]:
        return sorted(n for n, m in self.manifests.items() if m.version in self.versions)

    def manifest(self, owner: str, name: str) -> Manifest:
        if owner != self.settings.owner:
            raise NotFound(f"no model named {owner}/{name}")
        return self._named(name)

    def route(self, manifest: Manifest) -> Manifest:
        """The version a request for the model (no version given) goes to: the default, or the
        canary for its share of requests."""
        canary = self.canaries.get(manifest.name)
        if canary is not None and canary[0] in self.versions and self._random.random() < canary[1]:
            return self.versions[canary[0]].model.manifest
        return manifest

    def batcher(self, manifest: Manifest) -> Batcher:
        if manifest.version in self.versions:
            return self.versions[manifest.version]
        if manifest.name in self.problems:
            raise Unavailable(
                f"model {manifest.name} is unavailable: it {self.problems[manifest.name]}", retry_after=60
            )
        if self.manifests.get(manifest.name) is manifest:
            raise Unavailable(f"model {manifest.name} is still loading; try again shortly", retry_after=2)
        raise NotFound(f"version {manifest.version} of {manifest.name} was retired; use the latest")

    def by_version(self, version: str) -> Manifest:
        # Accept a bare version id, as Replicate does, and also "owner/name" or "owner/name:id".
        ref, _, version_id = version.rpartition(":") if ":" in version else ("", "", version)
        if "/" in version_id and not ref:
            ref, version_id = version_id, ""
        if version_id in self.versions:
            manifest = self.versions[version_id].model.manifest
            if not ref or ref == f"{self.settings.owner}/{manifest.name}":
                return manifest
        for m in self.manifests.values():
            if ref and ref != f"{self.settings.owner}/{m.name}":
                continue
            if not version_id or m.version == version_id:
                return m
        raise NotFound(f"no model version {version!r}")

    def _named(self, name: str) -> Manifest:
        if name not in self.manifests:
            raise NotFound(f"no model named {self.settings.owner}/{name}")
        return self.manifests[name]


def check_weight(raw: Any) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw < 1:
        raise InvalidInput("'canary_weight' must be a number between 0 and 1 (exclusive)")
    return float(raw)


def _example_inputs(manifest: Manifest, settings: Settings) -> list[dict[str, Any]]:
    """The manifest's examples, resolved as a request's input would be (for the warm-up)."""
    inputs = []
    for example in manifest.examples:
        raw = {
            name: files.data_url_of(manifest.folder / value) if manifest.schema.field(name).is_file else value
            for name, value in example.input.items()
        }
        values = manifest.schema.validate(raw)
        inputs.append(files.resolve(manifest.schema.fields, values, max_pixels=settings.max_image_pixels))
    return inputs
