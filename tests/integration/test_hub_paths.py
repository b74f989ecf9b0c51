"""The Hugging Face code paths (hf: datasets, TransformerLens pretrained names) on local files.

Real users fetch from the hub; no machine running these tests can reach it. So the same
loaders run here against local data: a dataset folder, and a tiny random GPT-2 placed in
a hub cache layout under a temporary HF_HOME with offline mode on. Nothing is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from index_checks import fresh_run, read_index
from transformers import AutoTokenizer

from indexer.pipeline import build_index
from spyglass.model import ModelLoadError, load_model

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def go_offline(monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> None:
    """Offline mode and a private cache, for this process and any child process.

    huggingface_hub and datasets read these variables once, at import, into module
    constants; both are imported by now (transformer_lens imports them), so the constants
    are patched too. transformers reads huggingface_hub.constants at call time.
    """
    import datasets.config
    import huggingface_hub.constants as hub

    hub_cache = hf_home / "hub"
    env = {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(hf_home / "datasets"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(hub, "HF_HOME", str(hf_home))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_home / "datasets")


# ---- hf: datasets ----------------------------------------------------------------------------


def test_hf_dataset_folder_indexes_end_to_end(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    go_offline(monkeypatch, tmp_path / "hf-home")
    rows = [
        {"text": "the fox runs over the river and the owl sleeps in the forest " * 6, "n": 0},
        {"text": None, "n": 1},  # null cells are skipped, as on the hub
        {"text": "short", "n": 2},  # shorter than one sequence: a sequence of its own
        {"text": "def f(x):\n    return x * 2\n" * 8, "n": 3},
    ]
    data = tmp_path / "my-dataset"
    data.mkdir()
    (data / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    cfg_kwargs = dict(
        model=str(tiny_model_dir),
        corpus=f"hf:{data}",
        db=str(tmp_path / "hf.db"),
        name="hf-tiny",
        seq_len=16,
        batch_size=4,
        top_k=3,
        device="cpu",
        progress=False,
    )
    from indexer.pipeline import IndexConfig

    report = build_index(IndexConfig(**cfg_kwargs))
    stored = read_index(cfg_kwargs["db"], "hf-tiny")

    tok = AutoTokenizer.from_pretrained(tiny_model_dir / "tokenizer")
    body = 15
    expected = []
    for i, row in enumerate(rows):
        ids = tok(row["text"] or "", add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), body):
            expected.append((f"{data}:row {i}", start, ids[start : start + body]))
    assert report.n_sequences == len(expected) > 0
    assert report.n_documents == 3 and report.skipped == {"empty or whitespace only": 1}
    assert report.n_tokens == sum(len(ids) + 1 for _, _, ids in expected)
    got = [(s.document, s.offset, s.tokens[1:]) for s in stored.sequences]
    assert got == expected
    assert {doc for doc, _, _ in got} == {f"{data}:row {i}" for i in (0, 2, 3)}
    assert [s.name for s in stored.sources] == ["0-mlp", "1-mlp"]
    assert stored.model.corpus == f"hf:{data}"


def test_hf_dataset_missing_column_is_one_line(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    from indexer.corpus import CorpusError, iter_sequences

    go_offline(monkeypatch, tmp_path / "hf-home")
    data = tmp_path / "ds"
    data.mkdir()
    (data / "data.jsonl").write_text(json.dumps({"body": "hello"}) + "\n")
    with pytest.raises(CorpusError) as err:
        iter_sequences(f"hf:{data}", str.split, seq_len=4)
    assert "no 'text' column" in str(err.value) and "body" in str(err.value)
    assert "\n" not in str(err.value)


# ---- a TransformerLens pretrained name from the local hub cache -------------------------------


def _gpt2_style_tokenizer(folder: Path):
    """A small byte-level BPE with GPT-2's single special token, as GPT-2 ships it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = "The capital of France is Paris. The quick brown fox jumps over the lazy dog. "
    raw.train_from_iterator([text * 20, "import numpy as np\nprint(np.arange(10))\n" * 10], trainer)
    special = "<|endoftext|>"
    tok = GPT2TokenizerFast(
        tokenizer_object=raw, bos_token=special, eos_token=special, unk_token=special
    )
    tok.save_pretrained(folder)
    return tok


@pytest.fixture
def gpt2_in_hub_cache(tmp_path: Path, monkeypatch):
    """A tiny random GPT2LMHeadModel where the hub cache would hold ``gpt2``.

    TransformerLens 3.9 resolves "gpt2" to the repo id ``gpt2`` (cache folder
    ``models--gpt2``); the hub itself redirects that id to ``openai-community/gpt2``, so
    the same snapshot is linked under both names.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_home = tmp_path / "hf-home"
    repo = hf_home / "hub" / "models--gpt2"
    snapshot = repo / "snapshots" / FAKE_COMMIT
    snapshot.mkdir(parents=True)
    tok = _gpt2_style_tokenizer(snapshot)
    config = GPT2Config(
        n_layer=2,
        n_embd=16,
        n_head=2,
        n_positions=64,
        n_ctx=64,  # TransformerLens reads n_ctx, which real GPT-2 configs still carry
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        # Large enough weights that activations are O(1): a 1e-4 tolerance then means something.
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(config).eval()
    hf.save_pretrained(snapshot)  # config.json + model.safetensors
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    (hf_home / "hub" / "models--openai-community--gpt2").symlink_to(repo, target_is_directory=True)
    go_offline(monkeypatch, hf_home)
    return hf, tok


def _hf_mlp_acts(hf, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
    """GPT-2's MLP activations (output of ``mlp.act``), the analogue of TL's hook_post."""
    out: dict[int, torch.Tensor] = {}
    handles = [
        block.mlp.act.register_forward_hook(
            lambda _m, _i, o, layer=layer: out.__setitem__(layer, o.detach())
        )
        for layer, block in enumerate(hf.transformer.h)
    ]
    try:
        with torch.no_grad():
            logits = hf(tokens).logits
    finally:
        for h in handles:
            h.remove()
    out[-1] = logits
    return out


def test_pretrained_name_loads_from_offline_hub_cache(gpt2_in_hub_cache):
    hf, tok = gpt2_in_hub_cache
    model = load_model("gpt2", device="cpu")

    assert (model.n_layers, model.d_model, model.d_mlp) == (2, 16, 64)
    assert model.d_vocab == len(tok)
    assert model.bos_id == tok.bos_token_id  # GPT-2 prepends <|endoftext|>
    prompt = model.encode_prompt("The capital of France is Paris.")
    assert prompt[0] == tok.bos_token_id
    assert prompt[1:] == tok("The capital of France is Paris.")["input_ids"]

    tokens = torch.tensor([prompt, prompt[::-1]])
    ours = model.mlp_activations(tokens, [0, 1])
    theirs = _hf_mlp_acts(hf, tokens)
    for layer in (0, 1):
        assert ours[layer].shape == (2, len(prompt), 64)
        assert ours[layer].abs().max() > 0.1, "activations too small for the check to bite"
        # fold_ln / centring change the arithmetic, not the function: same activations.
        torch.testing.assert_close(ours[layer], theirs[layer], atol=1e-4, rtol=1e-4)
    # TL centres the unembedding, which shifts logits per position: compare log-probs.
    with torch.no_grad():
        tl_logits = model._tl(tokens)
    torch.testing.assert_close(
        tl_logits.log_softmax(-1), theirs[-1].log_softmax(-1), atol=1e-4, rtol=1e-4
    )


def test_pretrained_name_indexes(gpt2_in_hub_cache, tiny_corpus_dir: Path, tmp_path: Path):
    """A pretrained name goes through build_index like any other spec."""
    from indexer.pipeline import IndexConfig

    cfg = IndexConfig(
        model="gpt2",
        corpus=str(tiny_corpus_dir),
        db=str(tmp_path / "gpt2.db"),
        tokens=32 * 20,
        seq_len=32,
        batch_size=8,
        top_k=3,
        device="cpu",
        progress=False,
    )
    report = build_index(cfg)
    stored = read_index(cfg.db, "gpt2")
    assert report.slug == "gpt2" and stored.model.spec == "gpt2"
    assert stored.model.n_sequences == 20
    assert [s.name for s in stored.sources] == ["0-mlp", "1-mlp"]
    assert all(s.tokens[0] == gpt2_in_hub_cache[1].bos_token_id for s in stored.sequences)


# ---- unknown names -----------------------------------------------------------------------------


def test_unknown_model_name_is_one_line_error():
    with pytest.raises(ModelLoadError) as err:
        load_model("no-such-model-xyz", device="cpu")
    message = str(err.value)
    assert "no-such-model-xyz" in message
    assert "\n" not in message


def test_folder_that_is_not_a_model_is_one_line_error(tmp_path: Path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ModelLoadError) as err:
        load_model(str(tmp_path), device="cpu")
    assert "not a Spyglass model folder" in str(err.value)
    assert "\n" not in str(err.value)


def test_an_sae_loads_the_model_the_way_it_was_trained(
    gpt2_in_hub_cache, tiny_corpus_dir: Path, tmp_path: Path
):
    """An SAE's model_from_pretrained_kwargs reach the indexing model and the stored index,
    and its latents are those of that model's activations, not of a default-loaded one."""
    from sae_weights import random_sae_tensors
    from transformer_lens import HookedTransformer

    from indexer.pipeline import IndexConfig
    from spyglass.sae import Sae, SaeConfig, save_sae

    hook, options = "blocks.0.hook_resid_post", {"center_writing_weights": False}
    sae = Sae(
        SaeConfig(
            architecture="standard",
            d_in=16,
            d_sae=24,
            hook_name=hook,
            model_name="gpt2",
            model_from_pretrained_kwargs=options,
        ),
        random_sae_tensors("standard", 0, 16, 24),
    )
    save_sae(sae, tmp_path / "sae")
    cfg = IndexConfig(
        model="gpt2",
        corpus=str(tiny_corpus_dir),
        db=str(tmp_path / "gpt2.db"),
        tokens=32 * 20,
        seq_len=32,
        batch_size=8,
        top_k=3,
        layers=(),
        saes=(str(tmp_path / "sae"),),
        device="cpu",
        progress=False,
    )
    build_index(cfg)
    stored = read_index(cfg.db, "gpt2")
    assert stored.model.options == options
    maxima = {}
    for name, kwargs in (("trained", options), ("default", {})):
        tl = HookedTransformer.from_pretrained("gpt2", device="cpu", **kwargs)
        x = fresh_run(tl, stored.token_lists(), [hook])[hook][:, 1:, :].reshape(-1, 16)
        acts = sae.encode(x[~x.isnan().any(1)])  # real tokens, BOS aside
        maxima[name] = acts.amax(0)
    got = torch.tensor([u.max_act for u in stored.units[0]])
    torch.testing.assert_close(got, maxima["trained"], atol=1e-4, rtol=1e-4)
    assert (got - maxima["default"]).abs().max() > 1e-2  # the options matter here


def test_saes_trained_on_differently_loaded_models_are_refused(tmp_path: Path):
    from sae_weights import random_sae_tensors

    from indexer.pipeline import IndexConfig
    from spyglass.sae import Sae, SaeConfig, save_sae

    for name, options in (("a", {}), ("b", {"fold_ln": False})):
        cfg = SaeConfig(
            architecture="standard",
            d_in=16,
            d_sae=8,
            hook_name="blocks.0.hook_resid_post",
            model_from_pretrained_kwargs=options,
        )
        save_sae(Sae(cfg, random_sae_tensors("standard", 0, 16, 8)), tmp_path / name)
    cfg = IndexConfig(
        model="gpt2",
        db=str(tmp_path / "x.db"),
        saes=(str(tmp_path / "a"), str(tmp_path / "b")),
        progress=False,
    )
    with pytest.raises(ValueError, match="separate runs") as err:
        build_index(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x.db").exists()
