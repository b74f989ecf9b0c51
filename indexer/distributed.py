"""Shards as Ray tasks: ``spyglass index --ray auto|ADDRESS --workers N [--unit-shards M]``.

Each task indexes one token shard (every N-th batch) of one slice of every source's units
(1/M of them, over those batches) on one worker, with a GPU when the cluster has them, and
returns its finished state and sequences through Ray's object store, so workers need no
shared disk (an SAE's activation log comes back too, and the driver keeps it on its own
disk until the write has read it). The driver merges each slice's token shards as they
arrive (exactly: ``indexer.stats.merge_source_states``) and writes the database in one
transaction, slice after slice, as one pass over the whole corpus would have. A task's
checkpoints go to its node's temp folder, so a retried task on the same node resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path

from indexer.activation_log import ActivationLog
from indexer.checkpoint import Progress, ShardResult, ShardWork, load_result, shard_dir
from indexer.config import IndexConfig, IndexReport, plan_index
from indexer.pipeline import merge_progress, run_pass
from indexer.write import write_index

log = logging.getLogger(__name__)


def index_with_ray(
    cfg: IndexConfig, *, address: str, workers: int, unit_shards: int = 1
) -> IndexReport:
    """Index ``cfg`` as ``workers`` token shards x ``unit_shards`` unit slices on the Ray
    cluster at ``address`` ('auto': the one running on this machine, else a new local
    one), then merge them into ``cfg.db``."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'spyglass[ray]'") from None
    if workers < 1 or unit_shards < 1:
        raise ValueError("--workers and --unit-shards must be at least 1")
    plan = plan_index(dataclasses.replace(cfg, device="cpu", units=(0, unit_shards)))
    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, address)
    logs = Path(tempfile.mkdtemp(prefix="ray-logs-", dir=_made(cfg.work_folder())))
    try:
        try:
            merged, sequences, seconds = _run_tasks(ray, cfg, address, workers, unit_shards, logs)
        finally:
            if started_here:
                ray.shutdown()
        counted = dataclasses.replace(merged[0], states={})
        counted.seconds = seconds  # wall time of the sharded pass
        parts = [[m.states] for m in merged]
        return write_index(plan, parts, sequences, counted)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
        for parent in (logs.parent, logs.parent.parent):
            with contextlib.suppress(OSError):  # not empty: other runs' work
                parent.rmdir()


def _run_tasks(ray, cfg: IndexConfig, address: str, workers: int, unit_shards: int, logs: Path):
    """Every shard as a task; each slice's token shards merged as they arrive, their
    activation logs stored in ``logs``: (merged progress per slice, sequences, seconds)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    tasks = workers * unit_shards
    cpus = max(1, int(resources.get("CPU", 1)) // tasks)
    options = {"num_gpus": 1, "num_cpus": 1} if gpus >= 1 else {"num_cpus": cpus}
    log.info(
        "ray: %d token shards x %d unit slices on %s (%s per task)",
        workers,
        unit_shards,
        address,
        "a GPU" if gpus >= 1 else f"{cpus} CPU",
    )
    task = ray.remote(max_retries=2)(_run_shard).options(**options)
    started = time.perf_counter()
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("shard", "units")}
    device = "cuda" if gpus >= 1 else "cpu"
    pending = {
        task.remote(fields, (i, workers), (j, unit_shards), device, cpus): j
        for j in range(unit_shards)
        for i in range(workers)
    }
    merged: list[Progress | None] = [None] * unit_shards
    sequences = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        j = pending.pop(ready[0])
        result: ShardResult = ray.get(ready[0])
        for state in result.progress.states.values():
            if "log" in state:  # on this machine's disk, not in its memory
                ActivationLog.store(state["log"], logs)
        have = merged[j]
        merged[j] = result.progress if have is None else merge_progress(have, result.progress)
        if j == 0:  # every slice read the same sequences
            sequences.append([result.sequences])
        del result
    return merged, sequences, time.perf_counter() - started


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _connect(ray, address: str) -> None:
    if address != "auto":
        ray.init(address=address, logging_level=logging.WARNING)
        return
    try:
        ray.init(address="auto", logging_level=logging.WARNING)
    except ConnectionError:
        log.info("ray: no cluster running here; starting a local one")
        ray.init(include_dashboard=False, logging_level=logging.WARNING)


def _run_shard(
    fields: dict, shard: tuple[int, int], units: tuple[int, int], device: str, threads: int
) -> ShardResult:
    """One shard on a Ray worker: the pass (resuming from this node's checkpoint after a
    retry), then its result for the driver."""
    import numba
    import torch

    if device == "cpu":
        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    work_root = fields.get("work") or str(Path(tempfile.gettempdir()) / "spyglass-ray-work")
    cfg = IndexConfig(
        **{**fields, "work": work_root, "device": device, "progress": False},
        shard=shard,
        units=units,
    )
    plan = plan_index(cfg)
    work = ShardWork(shard_dir(cfg.work_folder(), shard, units))
    try:
        run_pass(plan, work)
    finally:
        work.close()
    result = load_result(work.folder)
    work.remove()
    return result
