"""Dask distributed runs the gallery build's per-photo work: on this machine's cores, or on a cluster.

The one module that knows Dask. The build (index/build.py) hands it a pure function of a batch
of items and an iterable of items; :meth:`Engine.stream` gives back each batch's results as they
finish. Everything else (the journal, the order of the index, the report) stays in the build.

- **Where.** :func:`connect` with no scheduler starts a ``LocalCluster`` on this machine: worker
  processes with one thread each (``workers`` of them, default one per core; the dlib of the
  active environment, so the fast one of ``make kiosk`` when it is installed). With a scheduler
  address (``tcp://HOST:8786``) it uses that cluster; no answer within
  :data:`CONNECT_TIMEOUT_S` seconds is an :class:`EngineError` naming the address.
- **Once per worker** (:class:`Setup`, a ``WorkerPlugin``): the models are loaded (``warm``),
  and the build's read-only ``payload`` (the known journal keys) arrives with the plugin, so a
  worker that joins or is restarted mid-build gets it too, and no task carries it.
- **The dataset path.** Workers open the photos by the driver's absolute paths, so every worker
  must see the dataset at the same path (a shared mount). :meth:`Engine.check_path` makes every
  worker hash one photo and compare it with the driver's hash; each worker checks again before its
  first batch (workers that join later). Otherwise: :class:`EngineError` naming the path.
- **Batches and backpressure** (:meth:`Engine.stream`): items go in batches of about
  :data:`BATCH_S` seconds of work, the size adapted from the measured time per item (starting at
  :data:`FIRST_BATCH` and at most doubling from one batch to the next), and at most
  :data:`IN_FLIGHT_PER_THREAD` batches per worker thread are submitted and not yet collected, so
  neither the driver nor the scheduler ever holds more than that of the dataset; the items are
  drawn from the iterable only as room frees up (a 4.2M-photo listing feeds workers from its
  first photos on).
- **A worker that dies** mid-batch: the scheduler gives the batch to another worker (Dask's own
  rescheduling; the nanny restarts the process); its result reaches the driver once. A batch that
  kills ``distributed.scheduler.allowed-failures`` + 1 workers (3 + 1) stops the build with an
  :class:`EngineError` naming its first item.
- **The driver killed** (even ``kill -9``): a LocalCluster's worker processes exit with it (each
  watches a pipe from its parent); a remote cluster releases the driver's tasks when its
  connection is gone.
- **The dashboard** (bokeh is installed with the project): :attr:`Engine.dashboard` is its
  address (LocalCluster: ``http://127.0.0.1:<free port>/status``; a cluster: where its scheduler
  serves it), or "" when there is none.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from distributed import Client, KilledWorker, LocalCluster, WorkerPlugin, as_completed, get_worker

CONNECT_TIMEOUT_S = 5  # an unreachable scheduler is reported after this long
WORKERS_TIMEOUT_S = 120  # a scheduler without workers is reported after this long
BATCH_S = 3.0  # seconds of work per batch, once the time per item is measured
FIRST_BATCH = 2  # items in each of the first batches (the first measurements)
MAX_BATCH = 1000
IN_FLIGHT_PER_THREAD = 2  # batches running or queued per worker thread: one runs while one waits
THREADS_EVERY_S = 5  # how often the number of worker threads is asked again (workers come and go)
ADDRESS = re.compile(r"^(tcp|tls)://[^\s/:]+(:\d{1,5})?$|^(tcp|tls)://\[[0-9a-fA-F:.]+\](:\d{1,5})?$")

T = TypeVar("T")


class EngineError(RuntimeError):
    """The cluster can't do the work: unreachable, no workers, a path the workers don't see."""


def address_problem(scheduler: str) -> str:
    """Why ``scheduler`` is not a scheduler address ("" when it is one)."""
    if ADDRESS.match(scheduler):
        return ""
    return f"--scheduler {scheduler!r} is not a Dask scheduler address: give tcp://HOST:PORT (e.g. tcp://10.0.0.5:8786)"


class Setup(WorkerPlugin):
    """Runs once in each worker process: loads the models, holds the build's payload and checks the path."""

    def __init__(self, name: str, warm: Callable[[], Any], payload: Any, probe: tuple[str, str] | None):
        self.name = name  # one per build: two builds on one cluster don't meet
        self.warm = warm
        self.payload = payload
        self.probe = probe  # (path, sha1) every worker must read alike, or None
        self.path_ok = False

    def setup(self, worker: Any) -> None:
        self.warm()

    def check_path(self, where: str) -> None:
        """EngineError unless this worker reads the probe photo as the driver did (once per worker)."""
        if self.path_ok or self.probe is None:
            return
        path, sha1 = self.probe
        found = file_sha1(path)
        if found != sha1:
            raise EngineError(path_message({where: found}, path, 1))
        self.path_ok = True


def file_sha1(path: str) -> str:
    """sha1 of a file, or why it can't be read (as text starting with "cannot read")."""
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    return h.hexdigest()


def path_message(bad: dict[str, str], path: str, of: int) -> str:
    found = "; ".join(
        f"{w}: {r if r.startswith('cannot read') else 'other bytes (sha1 ' + r[:12] + ')'}" for w, r in bad.items()
    )
    return (
        f"{len(bad)} of {of} Dask workers do not see the dataset photo {path} as this machine does ({found}). "
        "Workers open the photos by this machine's paths: mount the dataset at the same path on every worker host"
    )


def _task(fn: Callable[..., list], plugin: str, items: list, args: tuple) -> tuple[list, float]:
    """Runs in a worker: ``fn(items, *args, payload)`` and how long it took."""
    worker = get_worker()
    setup: Setup = worker.plugins[plugin]
    setup.check_path(worker.address)
    started = time.perf_counter()
    results = fn(items, *args, setup.payload)
    return results, time.perf_counter() - started


@dataclass
class Engine:
    client: Client
    cluster: LocalCluster | None
    where: str  # "this machine" or the scheduler's address, for messages
    plugin: str = ""

    _threads: tuple[float, int] = (-math.inf, 0)  # (when asked, worker threads then)

    @property
    def threads(self) -> int:
        """Worker threads now in the cluster (asked of the scheduler at most every few seconds)."""
        asked, n = self._threads
        if time.monotonic() - asked > THREADS_EVERY_S:
            n = sum(self.client.nthreads().values())
            self._threads = (time.monotonic(), n)
        return max(1, n)

    @property
    def dashboard(self) -> str:
        """The dashboard's address, or "" without one (bokeh missing, or the scheduler serves none)."""
        with contextlib.suppress(Exception):
            if "dashboard" in self.client.scheduler_info().get("services", {}):
                return self.client.dashboard_link
        return ""

    def prepare(self, warm: Callable[[], Any], payload: Any = None, probe: tuple[str, str] | None = None) -> None:
        """Send every worker (and every one that joins later) the setup: models, payload, probe photo."""
        self.plugin = f"megapixels-build-{uuid.uuid4().hex[:12]}"
        self.client.register_plugin(Setup(self.plugin, warm, payload, probe), name=self.plugin)

    def check_path(self, path: str, sha1: str) -> None:
        """EngineError naming ``path`` unless every worker reads it with this ``sha1``."""
        found = self.client.run(file_sha1, path)
        bad = {w: r for w, r in sorted(found.items()) if r != sha1}
        if bad:
            raise EngineError(path_message(bad, path, len(found)))

    def stream(
        self,
        fn: Callable[..., list],
        items: Iterable[T],
        args: tuple = (),
        send: Callable[[T], Any] = lambda item: item,
    ) -> Iterator[tuple[list[T], list]]:
        """``fn([send(item) ...], *args, payload)`` over batches of ``items`` on the workers; yields
        (batch, results) as batches finish, in no particular order. See the module docstring."""
        source = iter(items)
        done = as_completed(loop=self.client.loop)
        batches: dict[Any, list[T]] = {}
        per_item: float | None = None
        last_size, numbers = 0, itertools.count()
        exhausted = False

        def fill() -> None:
            nonlocal exhausted, last_size
            room = IN_FLIGHT_PER_THREAD * self.threads - len(batches)
            while room > 0 and not exhausted:
                size = FIRST_BATCH if per_item is None else round(BATCH_S / max(per_item, 1e-4))
                size = max(1, min(size, MAX_BATCH, max(FIRST_BATCH, 2 * last_size)))
                batch = list(itertools.islice(source, size))
                if not batch:
                    exhausted = True
                    return
                future = self.client.submit(
                    _task,
                    fn,
                    self.plugin,
                    [send(i) for i in batch],
                    args,
                    key=f"{self.plugin}-batch-{next(numbers)}",
                    pure=False,
                )
                batches[future] = batch
                done.add(future)
                last_size = len(batch)
                room -= 1

        fill()
        for future in done:
            batch = batches.pop(future)
            try:
                results, seconds = future.result()
            except KilledWorker as e:
                raise EngineError(
                    f"a batch of {len(batch)} photos, the first {send(batch[0])}, stopped every worker that "
                    f"ran it ({e}); leave the photo out, or look for the workers' logs"
                ) from None
            future.release()
            now = seconds / len(batch)
            per_item = now if per_item is None else 0.7 * per_item + 0.3 * now
            yield batch, results
            fill()

    def close(self) -> None:
        if self.plugin and self.cluster is None:
            with contextlib.suppress(Exception):  # a shared cluster: take this build's plugin away
                self.client.unregister_worker_plugin(self.plugin)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


@contextlib.contextmanager
def connect(scheduler: str | None, workers: int | None, log: Callable[[str], None] | None = None) -> Iterator[Engine]:
    """An :class:`Engine` on a new LocalCluster of ``workers`` processes (``scheduler`` None), or on
    the cluster at ``scheduler`` once ``workers`` (default 1) of its workers have joined; closed (a
    LocalCluster's workers stopped) when the block ends, however it ends."""
    if scheduler is None:
        n = workers or os.cpu_count() or 1
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        engine = Engine(Client(cluster, set_as_default=False), cluster, "this machine")
    else:
        problem = address_problem(scheduler)
        if problem:
            raise EngineError(problem)
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise EngineError(
                f"no Dask scheduler answers at {scheduler} (waited {CONNECT_TIMEOUT_S} s: {e}); start one there "
                "with `dask scheduler`, or leave out --scheduler to use this machine's cores"
            ) from None
        engine = Engine(client, None, scheduler)
        want = workers or 1
        try:
            if len(client.nthreads()) < want:
                if log:
                    log(f"waiting for {want} workers to join {scheduler}")
                client.wait_for_workers(want, timeout=WORKERS_TIMEOUT_S)
        except (OSError, TimeoutError):
            found = len(client.nthreads())
            engine.close()
            raise EngineError(
                f"the Dask scheduler at {scheduler} has {found} of the {want} workers asked for after "
                f"{WORKERS_TIMEOUT_S} s: start workers with `dask worker {scheduler}` with this project installed, "
                "on hosts that see the dataset at the same path"
            ) from None
    try:
        yield engine
    finally:
        engine.close()
