"""The models one worker serves: loaded after fork on a background thread, each with its own batcher.

``/readyz`` answers 503 until every configured model is loaded. A request for a model that is installed
in the sie models directory but not loaded starts loading it (``load_on_demand``) and gets 503
``MODEL_LOADING`` meanwhile, which sie-sdk retries; any other model gets 404 listing what is available. Past
``max_on_demand_models`` such models, loading one more first unloads the one least recently asked for. A model that
failed to load answers 502 until its folder changes (a copy that was not finished, a file replaced): the next request
then loads it again.
A model scores (a ``Reranker``) or encodes (an ``Encoder`` behind ``encode_runner.EncodeRunner``), as its
config's architecture says.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from sie.dtypes import resolve_dtype
from sie.encoder import model_task
from sie.errors import InvalidInputError, first_line
from sie.hub import folder_state, local_models
from sie.reranker import Reranker
from sie.server.batcher import Batcher, BatchStats
from sie.server.config import ServerConfig
from sie.server.encode_runner import EncodeRunner, NoEncoderError, describe_encoder, served_encoder
from sie.server.errors import ModelLoadFailedError, ModelLoadingError, ModelNotServedError, without_local_paths
from sie.server.memory import IDLE_S, HeapTrimmer
from sie.server.metrics import Metrics

logger = logging.getLogger(__name__)

# Set by gunicorn_conf.post_fork: which of the ``workers`` processes this is, to pick its GPU.
WORKER_SLOT_ENV = "SIE_WORKER_SLOT"


@dataclass(frozen=True)
class LoadFailure:
    """Why a model did not load (``"TypeError: ..."``, the first line), its folder's ``folder_state`` when the load
    began, and its ``task`` as the load read it (``"score"`` or ``"encode"``)."""

    message: str
    folder: tuple[tuple[str, int, int], ...] | None
    task: str


@dataclass(frozen=True)
class ServedModel:
    """A loaded model and the batcher that feeds it: a reranker, or an encoder (``encoding``)."""

    name: str
    reranker: Reranker | None
    batcher: Batcher
    encoding: EncodeRunner | None = None

    @property
    def task(self) -> str:
        """``"encode"`` or ``"score"``."""
        return "encode" if self.encoding is not None else "score"


def worker_device(configured: str) -> str:
    """The device of this worker: ``cuda:<slot>`` when several GPUs share ``auto``/``cuda``, else as configured."""
    slot = os.environ.get(WORKER_SLOT_ENV)
    if slot is None or configured not in ("auto", "cuda") or not torch.cuda.is_available():
        return configured
    return f"cuda:{int(slot) % torch.cuda.device_count()}"


class ModelRegistry:
    """Loads, holds and looks up the models of one worker process."""

    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self._config = config
        self._metrics = metrics
        self.heap_trimmer = HeapTrimmer(config.malloc_trim_interval_s)
        self._device = worker_device(config.device)
        self._dtype = resolve_dtype(config.dtype)
        self._lock = threading.Lock()
        self._served: dict[str, ServedModel] = {}
        self._loading: set[str] = set()
        self._failed: dict[str, LoadFailure] = {}
        # Models loaded or loading on demand (not configured), the least recently asked for first.
        self._on_demand: OrderedDict[str, None] = OrderedDict()

    def start(self) -> None:
        """Loads the configured models one after another on a background thread."""
        with self._lock:
            self._loading.update(self._config.models)
        threading.Thread(target=self._load_all, args=(self._config.models,), name="sie-model-loader",
                         daemon=True).start()

    def _load_all(self, names: tuple[str, ...]) -> None:
        for name in names:
            self._load(name)

    def _load(self, name: str) -> None:
        if name not in self._config.models:
            self._make_room_for(name)
        folder = folder_state(name)
        task = "score"  # a model that does not resolve counts as a reranker (model_task)
        try:
            reranker, encoding = None, None
            task = model_task(name)
            if task == "encode":
                encoding = served_encoder(name, self._device, self._dtype, self._config.backend,
                                          self._config.max_batch_tokens)
                loaded, run = encoding.encoder, encoding.run
            else:
                reranker = Reranker(name, device=self._device, dtype=self._dtype, backend=self._config.backend,
                                    max_batch_tokens=self._config.max_batch_tokens,
                                    recipe=self._config.recipe_for(name))
                # The first batch pays for lazy initialisation (kernels, allocator): not a client's request.
                reranker.logits(reranker.encode("warm up", ["warm up"]))
                loaded, run = reranker, reranker.logits
            batcher = Batcher(run, max_batch_tokens=loaded.max_batch_tokens,
                              max_wait_s=self._config.max_batch_wait_ms / 1000, max_queue=self._config.max_queue,
                              on_batch=lambda stats: self._after_batch(name, stats),
                              on_idle=self.heap_trimmer.when_idle, idle_s=IDLE_S, name=name)
        except Exception as error:  # any failure is reported per model, the worker keeps serving the others
            logger.exception("loading model %s failed", name)
            with self._lock:
                self._loading.discard(name)
                self._on_demand.pop(name, None)
                # Clients see the first line, without the server's directories; the log above has it all.
                self._failed[name] = LoadFailure(f"{type(error).__name__}: {without_local_paths(first_line(error))}",
                                                 folder, task)
            return
        self._metrics.track_queue(name, lambda: batcher.depth)
        with self._lock:
            # Models asked for at once each made room before any of the others had loaded: the last to load unloads.
            past_limit = self._take_past_limit() if name in self._on_demand else []
            self._served[name] = ServedModel(name, reranker, batcher, encoding)
            self._loading.discard(name)
        self._unload(past_limit)
        logger.info("serving %s on %s (%s), backends %s", name, loaded.device, loaded.dtype, loaded.backends)

    def _make_room_for(self, name: str) -> None:
        """Counts ``name`` among the models loaded on demand and, past ``max_on_demand_models``, unloads the least
        recently asked for of those loaded (not those still loading) before ``name`` loads, so that the worker
        does not hold both; loads that overlap may, until the last of them ends (``_load`` then unloads)."""
        with self._lock:
            self._on_demand[name] = None
            self._on_demand.move_to_end(name)
            past_limit = self._take_past_limit()
        self._unload(past_limit)

    def _take_past_limit(self) -> list[ServedModel]:
        """Under the lock: takes out of service (and out of the queue-depth gauge), least recently asked for first,
        the models loaded on demand that those loaded or loading on demand exceed ``max_on_demand_models`` by."""
        excess = len(self._on_demand) - self._config.max_on_demand_models
        if not self._config.max_on_demand_models or excess <= 0:
            return []
        taken = [self._served.pop(other) for other in [other for other in self._on_demand
                                                       if other in self._served][:excess]]
        for model in taken:
            del self._on_demand[model.name]
            # Now, not once its queue has run: by then the model may have loaded again, with a gauge of its own.
            self._metrics.untrack_queue(model.name)
        return taken

    def _unload(self, models: list[ServedModel]) -> None:
        """Stops each model's batcher once its queued requests have run (a request that reaches it later gets 503
        QUEUE_FULL, which sie-sdk retries; the retry loads the model again) and frees its memory."""
        if not models:
            return
        while models:  # popped from the caller's list, so that nothing here holds them at the collection below
            self._stop(models.pop())
        # What the unloaded models held goes back to the OS now, not at some later collection or trim.
        gc.collect()
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        self.heap_trimmer.when_idle()

    def _stop(self, model: ServedModel) -> None:
        logger.info("unloading %s, the least recently used of more than %d models loaded on demand", model.name,
                    self._config.max_on_demand_models)
        model.batcher.close(timeout=self._config.graceful_timeout_s,
                            refusal=f"model {model.name!r} was unloaded to make room for another; retry to load it "
                                    "again")

    def _after_batch(self, name: str, stats: BatchStats) -> None:
        self._metrics.observe_batch(name, stats)
        self.heap_trimmer.after_batch()

    def pending(self) -> dict[str, str]:
        """Configured models that are not loaded, each with its state (``loading`` or the failure); one that failed
        and has changed since loads again."""
        for name in self._config.models:
            self._retry_if_changed(name)
        with self._lock:
            return {name: self._failed[name].message if name in self._failed else "loading"
                    for name in self._config.models if name not in self._served}

    def _first_configured(self, task: str) -> str | None:
        """The first configured model that does ``task``, or is still loading (its request then waits); None."""
        with self._lock:
            for name in self._config.models:
                served = self._served.get(name)
                if (served is not None and served.task == task) or name in self._loading:
                    return name
        return None

    def _first_failed(self, task: str) -> str | None:
        """The first configured model of ``task`` that failed to load (its request gets the 502 that says why). The
        task is the failed load's: reading it again would resolve the model, a download for a hub id, per request."""
        with self._lock:
            return next((name for name in self._config.models
                         if name in self._failed and self._failed[name].task == task), None)

    @property
    def default_model(self) -> str:
        """The model of scoring requests that name none (the TEI and Cohere rerank endpoints): the first configured
        model that scores, else the first configured scoring model that failed to load, else the first configured."""
        return self._first_configured("score") or self._first_failed("score") or self._config.models[0]

    def default_encoder(self) -> str:
        """The model of encode requests that name none (TEI's ``/embed``): the first configured model that encodes,
        else the first configured embedding model that failed to load; raises NoEncoderError when none does."""
        name = self._first_configured("encode") or self._first_failed("encode")
        if name is None:
            raise NoEncoderError(self.available())
        return name

    @staticmethod
    def _for_task(served: ServedModel, task: str | None) -> ServedModel:
        if task is not None and served.task != task:
            kind, route = ("an embedding model", "encode") if served.task == "encode" else ("a reranker", "score")
            raise InvalidInputError("model", f"{served.name!r} is {kind}: POST /v1/{route}/{served.name}")
        return served

    def get(self, name: str, task: str | None = None) -> ServedModel:
        """The served model ``name``; raises ModelLoadingError, ModelLoadFailedError or ModelNotServedError, and
        InvalidInputError when it does not do ``task`` (``"score"`` or ``"encode"``, when given)."""
        self._retry_if_changed(name)
        with self._lock:
            known = self._known(name, task)
            if name in self._on_demand:
                self._on_demand.move_to_end(name)
        if known is not None:
            return known
        installed = local_models()
        if not self._config.load_on_demand or name not in installed:
            raise ModelNotServedError(name, self.available(installed))
        with self._lock:
            # Another request may have loaded it, or seen it fail, since the first look.
            known = self._known(name, task)
            if known is not None:
                return known
            self._loading.add(name)
            threading.Thread(target=self._load, args=(name,), name=f"sie-load-{name}", daemon=True).start()
        raise ModelLoadingError(f"model {name!r} is loading; retry shortly")

    def _retry_if_changed(self, name: str) -> None:
        """Loads ``name`` again when it failed and its folder changed since that load began."""
        with self._lock:
            failure = self._failed.get(name)
        if failure is None or folder_state(name) == failure.folder:
            return
        with self._lock:
            if self._failed.get(name) is not failure:
                return  # another request retried it meanwhile
            del self._failed[name]
            self._loading.add(name)
        logger.info("model %s changed since it failed to load: loading it again", name)
        threading.Thread(target=self._load, args=(name,), name=f"sie-load-{name}", daemon=True).start()

    def _known(self, name: str, task: str | None) -> ServedModel | None:
        """Under the lock: the served model ``name``, or None when it was never asked for; raises
        ModelLoadingError or ModelLoadFailedError while it loads or once it failed."""
        if name in self._served:
            return self._for_task(self._served[name], task)
        if name in self._loading:
            raise ModelLoadingError(f"model {name!r} is loading; retry shortly")
        if name in self._failed:
            raise ModelLoadFailedError(f"model {name!r} failed to load: {self._failed[name].message}")
        return None

    def available(self, installed: list[str] | None = None) -> list[str]:
        """Ids of the models that are loaded, or installed and loadable on demand."""
        with self._lock:
            names = set(self._served) | set(self._loading)
        if self._config.load_on_demand:
            names.update(local_models() if installed is None else installed)
        return sorted(names)

    def describe(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: every loaded, loading, failed and installed model (sie-sdk's ModelInfo keys)."""
        with self._lock:
            served = dict(self._served)
            loading = set(self._loading)
            failed = {name: failure.message for name, failure in self._failed.items()}
        installed = set(local_models())
        names = sorted(set(served) | loading | set(failed) | installed)
        return [self._info(name, served.get(name), name in loading, failed.get(name), name in installed)
                for name in names]

    @staticmethod
    def _info(name: str, served: ServedModel | None, loading: bool, failure: str | None,
              installed: bool = False) -> dict[str, Any]:
        state = "loaded" if served else "loading" if loading else "failed" if failure else "available"
        info: dict[str, Any] = {
            "name": name,
            "loaded": served is not None,
            "state": state,
            "last_error": {"message": failure, "permanent": True} if failure else None,
            "inputs": ["text"],
            "outputs": ["score"],
            "max_sequence_length": None,
        }
        if served is not None and served.encoding is not None:
            info.update(task="encode", **describe_encoder(served.encoding.encoder))
        elif served is None and installed:
            # Read from the installed folder's config (no download): what it will do once loaded.
            task = model_task(name)
            info.update(task=task, outputs=["dense"] if task == "encode" else ["score"])
        elif served is not None:
            reranker = served.reranker
            info.update(task="score", max_sequence_length=reranker.max_length,
                        architecture=reranker.architecture, recipe=reranker.recipe.name if reranker.recipe else None,
                        device=str(reranker.device), dtype=str(reranker.dtype).removeprefix("torch."),
                        backends=reranker.backends, max_batch_tokens=reranker.max_batch_tokens)
        return info

    def close(self) -> None:
        """Stops every batcher once the requests already queued have run."""
        with self._lock:
            served = list(self._served.values())
        for model in served:
            model.batcher.close(timeout=self._config.graceful_timeout_s)
