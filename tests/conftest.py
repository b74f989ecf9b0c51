"""Session fixtures: a tiny random TransformerLens model, a tiny corpus and an index of both.

Everything is built offline in a few seconds (no hub): the tokenizer is trained here with
the `tokenizers` library on the corpus text itself, the model is random-init.
"""

from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from index_checks import save_random_topk_sae
from tiny_settings import TINY_SLUG, tiny_config

from indexer.pipeline import IndexConfig, IndexReport, build_index
from spyglass.model import load_model, save_model

BOS, EOS, UNK = "<bos>", "<eos>", "<unk>"
TINY_VOCAB = 400

# Text the app must escape, kept literal in the corpus so it reaches stored token strings.
HOSTILE_TEXT = '<script>alert("x")</script> Tom &amp; Jerry'
SHORT_TEXT = "Too short."


# ---- the corpus -------------------------------------------------------------------------


def _prose(rng: random.Random, words: list[str], n_words: int) -> str:
    """Seeded pseudo-sentences over a topic vocabulary (deterministic across runs)."""
    out: list[str] = []
    sentence: list[str] = []
    while len(out) + len(sentence) < n_words:
        sentence.append(rng.choice(words))
        if len(sentence) >= rng.randint(6, 14):
            out.extend([sentence[0].capitalize(), *sentence[1:-1], sentence[-1] + "."])
            sentence = []
    out.extend(sentence)
    return " ".join(out)


def _words(text: str) -> list[str]:
    return text.split()


def _corpus_texts() -> dict[str, str]:
    """Relative path -> text. Varied on purpose: prose, code, markup, numbers, non-ASCII."""
    rng = random.Random(1234)
    animals = _words(
        "the fox dog cat owl horse river forest quick brown lazy jumps runs sleeps "
        "hunts night morning field small large old young green grey under over near"
    )
    web = _words(
        "page link button click user server request response header cookie browser "
        "script style table form input value submit render escape the a of to"
    )
    units = _words("meter second gram litre hour day year price total sum of and the")
    unicode_words = _words("café naïve Zürich façade jalapeño 東京 日本語 ü ß € déjà vu")
    code = "\n".join(
        f"def f{i}(x, y={i}):\n    if x > y:\n        return x * {i} + y\n    return [y] * {i}\n"
        for i in range(40)
    )
    numbers = " ".join(
        f"{rng.randint(1, 9999)} {rng.choice(units)} on {rng.randint(1, 28)}/"
        f"{rng.randint(1, 12)}/{rng.randint(1900, 2030)} "
        f"costs ${rng.randint(1, 500)}.{rng.randint(10, 99)};"
        for _ in range(60)
    )
    html = " ".join(
        [
            _prose(rng, web, 120),
            HOSTILE_TEXT,
            _prose(rng, web, 120),
            "<b>bold</b> &lt;tag&gt; " + HOSTILE_TEXT,
            _prose(rng, web, 100),
        ]
    )
    return {
        "animals.txt": _prose(rng, animals, 350),
        "code/functions.txt": code,
        "html.txt": html,
        "numbers.txt": numbers,
        "unicode.txt": _prose(rng, animals + unicode_words, 250),
        "short.txt": SHORT_TEXT,
    }


@pytest.fixture(scope="session", autouse=True)
def logit_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Logit summaries cached in a folder of the session's (``indexer.logit_cache``), not
    the user's cache; subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get("SPYGLASS_CACHE_DIR")
    os.environ["SPYGLASS_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("SPYGLASS_CACHE_DIR", None)
    else:
        os.environ["SPYGLASS_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of .txt files (one in a subfolder); short.txt is shorter than a sequence."""
    root = tmp_path_factory.mktemp("tiny-corpus")
    for rel, text in _corpus_texts().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# ---- the model --------------------------------------------------------------------------


def _train_tokenizer(texts: list[str], folder: Path):
    """A byte-level BPE trained on ``texts``, saved and reloaded through AutoTokenizer.

    The reload matters: an in-memory PreTrainedTokenizerFast makes TransformerLens fail
    with KeyError 'name_or_path' (see shared/notes/embedded-model.md).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=[BOS, EOS, UNK],
        # The full byte alphabet: any text, even unseen, tokenizes without <unk>.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny_hooked_config(d_vocab: int):
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        n_layers=2,
        d_model=16,
        d_head=4,
        n_heads=4,
        d_mlp=64,
        n_ctx=32,
        d_vocab=d_vocab,
        act_fn="gelu",
        normalization_type="LN",
        default_prepend_bos=True,
        seed=0,
        device="cpu",
        model_name="tiny-random",
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer HookedTransformer saved with ``save_model``; returns the folder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # HookedTransformer is deprecated
        from transformer_lens import HookedTransformer

        root = tmp_path_factory.mktemp("tiny-model")
        tok = _train_tokenizer(list(_corpus_texts().values()), root / "trained-tokenizer")
        hooked = HookedTransformer(tiny_hooked_config(len(tok)), tokenizer=tok)
    folder = root / "model"
    save_model(hooked, folder)

    loaded = load_model(str(folder), device="cpu")
    assert loaded.bos_id == tok.convert_tokens_to_ids(BOS)
    assert loaded.d_vocab == len(tok)
    return folder


@pytest.fixture(scope="session")
def tiny_sae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 48-latent TopK SAE (k=3) on the tiny model's last residual stream."""
    out = tmp_path_factory.mktemp("tiny-sae") / "sae"
    save_random_topk_sae(out, hook="blocks.1.hook_resid_post", d_in=16, width=48, k=3, seed=3)
    return out


# ---- the index --------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyIndex:
    db: str
    """SQLite path of the index."""
    slug: str
    model_dir: Path
    corpus_dir: Path
    config: IndexConfig
    report: IndexReport


@pytest.fixture(scope="session")
def tiny_index(
    tiny_model_dir: Path, tiny_corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> TinyIndex:
    """The tiny model indexed over the tiny corpus (both layers, seq_len 16, top 5)."""
    db = tmp_path_factory.mktemp("tiny-index") / "tiny.db"
    cfg = tiny_config(tiny_model_dir, tiny_corpus_dir, db)
    report = build_index(cfg)
    return TinyIndex(
        db=str(db),
        slug=TINY_SLUG,
        model_dir=tiny_model_dir,
        corpus_dir=tiny_corpus_dir,
        config=cfg,
        report=report,
    )
