"""The embedded SmolLM2 end to end: index a small slice of the embedded corpus, then check
the stored numbers against a fresh TransformerLens recompute and brute-force top-k.

First run builds the processed-weights cache (~30 s, in ~/.cache/spyglass or
$SPYGLASS_CACHE); later runs load it in a few seconds.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import torch
from index_checks import (
    StoredIndex,
    check_source,
    fresh_mlp_acts,
    read_index,
)

from indexer.corpus import document_streams
from indexer.pipeline import IndexConfig, build_index
from spyglass.model import Model, load_model

pytestmark = pytest.mark.slow

LAYERS = (0, 15, 29)
SEQ_LEN = 64
# 30 fp32 layers; the reference runs the same batches, so differences are rounding only.
ATOL = 1e-4
ZERO_TOL = 1e-4


@pytest.fixture(scope="module")
def embedded_config(tmp_path_factory: pytest.TempPathFactory) -> IndexConfig:
    return IndexConfig(
        model="embedded",
        corpus="embedded",
        db=str(tmp_path_factory.mktemp("embedded") / "embedded.db"),
        tokens=16 * SEQ_LEN,
        seq_len=SEQ_LEN,
        layers=LAYERS,
        batch_size=8,
        device="cpu",
        progress=False,
    )


@pytest.fixture(scope="module")
def stored(embedded_config: IndexConfig) -> StoredIndex:
    build_index(embedded_config)
    return read_index(embedded_config.db, "embedded")


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model("embedded", device="cpu")


@pytest.fixture(scope="module")
def fresh_acts(model: Model, stored: StoredIndex) -> dict[int, torch.Tensor]:
    return fresh_mlp_acts(model._tl, stored.token_lists(), LAYERS, batch_size=8)


def test_embedded_index_shape(stored: StoredIndex, model: Model):
    assert stored.model.slug == "embedded"
    assert stored.model.n_sequences >= 16 and stored.model.n_tokens <= 16 * SEQ_LEN
    assert stored.model.skip_first == 1
    assert [(s.name, s.layer, s.n_units) for s in stored.sources] == [
        (f"{layer}-mlp", layer, model.d_mlp) for layer in LAYERS
    ]
    for layer in LAYERS:
        firing = sum(bool(ex) for ex in stored.examples[layer])
        assert firing >= 0.9 * model.d_mlp, f"layer {layer}: only {firing} units fire"


def _documents_named(names: set[str], per_stream: int = 200) -> dict[str, str]:
    """Texts of the named embedded-corpus documents (each stream's first documents)."""
    found = {}
    for stream in document_streams("embedded"):
        for doc in itertools.islice(stream, per_stream):
            if doc.name in names:
                found[doc.name] = doc.text
            if names <= found.keys():
                return found
    return found


def test_embedded_sequences_are_the_corpus(stored: StoredIndex, model: Model):
    assert model.bos_id is None  # SmolLM2 is used without BOS (see notes)
    texts = _documents_named({s.document for s in stored.sequences})
    families = {s.document.split("/")[0] for s in stored.sequences}
    # Round robin over the four families: a small prefix already mixes them.
    assert families == {"shakespeare", "python-reference", "stdlib-docstrings", "stdlib-source"}
    for seq in stored.sequences:
        ids = model.tokenize(texts[seq.document])
        assert seq.tokens == ids[seq.offset : seq.offset + SEQ_LEN], seq.document


def test_embedded_random_windows_match_a_fresh_run(
    stored: StoredIndex, model: Model, embedded_config: IndexConfig
):
    """Windows of random neurons against run_with_cache on each sequence alone."""
    rng = random.Random(42)
    picks = [(rng.choice(LAYERS), rng.randrange(model.d_mlp)) for _ in range(6)]
    examples = [(layer, unit, ex) for layer, unit in picks for ex in stored.examples[layer][unit]]
    assert len(examples) >= 10
    names = {f"blocks.{layer}.mlp.hook_post" for layer in LAYERS}
    runs = {}  # sequence id -> cache: one forward per sequence, not per example
    for layer, unit, ex in examples:
        if ex.sequence_id not in runs:
            tokens = torch.tensor([stored.sequences[ex.sequence_id].tokens])
            with torch.inference_mode():
                runs[ex.sequence_id] = model._tl.run_with_cache(
                    tokens, names_filter=lambda n: n in names
                )[1]
        acts = runs[ex.sequence_id][f"blocks.{layer}.mlp.hook_post"][0, :, unit]
        window = acts[ex.window_start : ex.window_start + len(ex.acts)]
        torch.testing.assert_close(torch.tensor(ex.acts), window, atol=ATOL, rtol=1e-4)
        assert ex.value == pytest.approx(acts[ex.position].item(), abs=ATOL, rel=1e-4)
        assert ex.position - ex.window_start <= embedded_config.window_before


@pytest.mark.parametrize("layer", LAYERS)
def test_embedded_topk_equals_brute_force(
    stored: StoredIndex, fresh_acts, embedded_config: IndexConfig, layer: int
):
    acts = fresh_acts[layer]
    check_source(
        stored, layer, acts, before=embedded_config.window_before,
        after=embedded_config.window_after, skip_first=1, atol=ATOL, zero_tol=ZERO_TOL,
    )  # fmt: skip


def test_embedded_greedy_generation_knows_paris(model: Model):
    prompt = model.encode_prompt("The capital of France is")
    new = model.generate(prompt, max_new_tokens=3, temperature=0.0, seed=0)
    assert model.decode(new).startswith(" Paris"), model.decode(new)


def test_embedded_cache_folder_is_a_model_folder(model: Model):
    """The processed-weights cache is an ordinary Spyglass model folder."""
    from spyglass.model import embedded_cache_folder

    folder: Path = embedded_cache_folder()
    assert (folder / "spyglass-model.json").exists()
    again = load_model(str(folder), device="cpu")
    assert (again.n_layers, again.d_mlp, again.d_vocab) == (30, 1536, 49152)
    assert again.bos_id is None
