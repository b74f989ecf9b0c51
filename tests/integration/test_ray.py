"""Shards as Ray tasks on a local Ray cluster: 2 workers on this machine give the same
database as one process."""

from __future__ import annotations

import logging

import pytest
from db_dump import assert_same_index
from tiny_settings import tiny_config

from indexer.distributed import index_with_ray
from indexer.pipeline import build_index

ray = pytest.importorskip("ray", reason="Ray is in the test extra; install it")


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        logging_level=logging.WARNING,
    )
    yield
    ray.shutdown()


@pytest.mark.parametrize("workers, unit_shards", [(2, 1), (1, 2), (2, 3)])
def test_ray_shards_by_tokens_and_units_equal_one_process(
    local_cluster, tiny_model_dir, tiny_corpus_dir, tiny_sae_dir, tmp_path, workers, unit_shards
):
    """Token shards, slices of the units, or both: the same database as one process. The
    SAE's activation logs come back with the tasks' states."""
    sae = {"saes": (str(tiny_sae_dir),)}
    one = tmp_path / "one.db"
    build_index(tiny_config(tiny_model_dir, tiny_corpus_dir, one, **sae))
    two = tmp_path / "two.db"
    report = index_with_ray(
        tiny_config(tiny_model_dir, tiny_corpus_dir, two, **sae),
        address="auto",
        workers=workers,
        unit_shards=unit_shards,
    )
    assert report.n_sequences > 0 and report.sources
    assert ray.cluster_resources().get("CPU") == 2  # the tasks ran on this local cluster
    assert_same_index(str(one), str(two))


def test_ray_refuses_zero_workers(local_cluster, tiny_model_dir, tiny_corpus_dir, tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        index_with_ray(
            tiny_config(tiny_model_dir, tiny_corpus_dir, tmp_path / "x.db"),
            address="auto",
            workers=0,
        )


def test_cli_ray_auto_indexes_with_two_workers(tiny_model_dir, tiny_corpus_dir, tmp_path):
    """`spyglass index --ray auto --workers 2`: the cluster running on this machine (or a
    new local one), then the merged database."""
    import subprocess
    import sys

    windows = dict(window_before=24, window_after=8)  # the CLI's defaults
    cfg = tiny_config(tiny_model_dir, tiny_corpus_dir, tmp_path / "cli.db", **windows)
    one = tmp_path / "one.db"
    build_index(tiny_config(tiny_model_dir, tiny_corpus_dir, one, **windows))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "index",
            "--model",
            cfg.model,
            "--corpus",
            cfg.corpus,
            "--db",
            cfg.db,
            "--name",
            cfg.name,
            "--seq-len",
            str(cfg.seq_len),
            "--batch-size",
            str(cfg.batch_size),
            "--top-k",
            str(cfg.top_k),
            "--ray",
            "auto",
            "--workers",
            "2",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ray: 2 token shards x 1 unit slices" in done.stderr
    assert_same_index(str(one), cfg.db)
