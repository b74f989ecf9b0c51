"""Shards as Ray tasks: ``spyglass index --ray auto|ADDRESS --workers N``.

Each task indexes one shard (every N-th batch) on one worker, with a GPU when the
cluster has them, and returns its finished state and sequences through Ray's object
store, so workers need no shared disk. The driver merges the states as they arrive
(exactly: ``indexer.pipeline.merge_source_states``) and writes the database in one
transaction, as one pass over the whole corpus would have. A task's checkpoints go to
its node's temp folder, so a retried task on the same node resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path

from indexer.checkpoint import ShardResult, ShardWork, load_result, shard_dir
from indexer.pipeline import (
    IndexConfig,
    IndexReport,
    merge_progress,
    plan_index,
    run_pass,
    write_index,
)

log = logging.getLogger(__name__)


def index_with_ray(cfg: IndexConfig, *, address: str, workers: int) -> IndexReport:
    """Index ``cfg`` as ``workers`` shards on the Ray cluster at ``address`` ('auto': the
    one running on this machine, else a new local one), then merge them into ``cfg.db``."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'spyglass[ray]'") from None
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    plan = plan_index(dataclasses.replace(cfg, device="cpu"))  # checks settings; writes later
    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, address)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = max(1, int(resources.get("CPU", 1)) // workers)
        options = {"num_gpus": 1, "num_cpus": 1} if gpus >= 1 else {"num_cpus": cpus}
        log.info(
            "ray: %d shards on %s (%s per worker)",
            workers,
            address,
            "a GPU" if gpus >= 1 else f"{cpus} CPU",
        )
        task = ray.remote(max_retries=2)(_run_shard).options(**options)
        started = time.perf_counter()
        fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "shard"}
        pending = [
            task.remote(fields, (i, workers), "cuda" if gpus >= 1 else "cpu", cpus)
            for i in range(workers)
        ]
        merged, sequences = None, []
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            result: ShardResult = ray.get(ready[0])
            merged = result.progress if merged is None else merge_progress(merged, result.progress)
            sequences.append([result.sequences])
            del result
        merged.seconds = time.perf_counter() - started  # wall time of the sharded pass
    finally:
        if started_here:
            ray.shutdown()
    return write_index(plan, merged.states, sequences, merged)


def _connect(ray, address: str) -> None:
    if address != "auto":
        ray.init(address=address, logging_level=logging.WARNING)
        return
    try:
        ray.init(address="auto", logging_level=logging.WARNING)
    except ConnectionError:
        log.info("ray: no cluster running here; starting a local one")
        ray.init(include_dashboard=False, logging_level=logging.WARNING)


def _run_shard(fields: dict, shard: tuple[int, int], device: str, threads: int) -> ShardResult:
    """One shard on a Ray worker: the pass (resuming from this node's checkpoint after a
    retry), then its result for the driver."""
    import numba
    import torch

    if device == "cpu":
        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    work_root = fields.get("work") or str(Path(tempfile.gettempdir()) / "spyglass-ray-work")
    cfg = IndexConfig(
        **{**fields, "work": work_root, "device": device, "progress": False}, shard=shard
    )
    plan = plan_index(cfg)
    work = ShardWork(shard_dir(cfg.work_folder(), shard))
    try:
        run_pass(plan, work)
    finally:
        work.close()
    result = load_result(work.folder)
    work.remove()
    return result
