"""SAE evaluation on the tiny model, with SAEs whose answers are known exactly."""

from __future__ import annotations

import json

import pytest
import torch
from index_checks import fresh_hooked

import cli
from indexer.corpus import iter_sequences
from indexer.sae_eval import EvalConfig, epsilon_random, evaluate_sae
from spyglass.model import load_model
from spyglass.sae import Sae, SaeConfig, save_sae

HOOK = "blocks.0.hook_resid_post"
D = 16


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir), "cpu")


def standard_sae(w_enc, w_dec, b_enc=None) -> Sae:
    cfg = SaeConfig(
        architecture="standard",
        d_in=D,
        d_sae=w_enc.shape[1],
        hook_name=HOOK,
        apply_b_dec_to_input=False,
    )
    zeros = torch.zeros
    return Sae(
        cfg, {"W_enc": w_enc, "b_enc": zeros(w_enc.shape[1]), "W_dec": w_dec, "b_dec": zeros(D)}
    )


def perfect_sae() -> Sae:
    """relu(x) - relu(-x) = x: reconstructs every input exactly."""
    eye = torch.eye(D)
    return standard_sae(torch.cat([eye, -eye], dim=1), torch.cat([eye, -eye], dim=0))


def eval_cfg(tiny_corpus_dir) -> EvalConfig:
    return EvalConfig(corpus=str(tiny_corpus_dir), sequences=20, seq_len=16, batch_size=6)


def test_a_perfect_sae_recovers_all_the_loss(model, tiny_corpus_dir, tiny_model_dir):
    m = evaluate_sae(perfect_sae(), model, eval_cfg(tiny_corpus_dir))
    assert m["fvu"] == pytest.approx(0, abs=1e-6)
    assert m["loss_spliced"] == pytest.approx(m["loss_clean"], abs=1e-5)
    assert m["loss_recovered"] == pytest.approx(1, abs=1e-4)
    assert m["l0"] == pytest.approx(D, abs=0.05)  # one of each +/- pair per coordinate
    assert m["dead_fraction"] == 0 and m["tokens"] == 20 * 15
    # The clean loss is TransformerLens's own, over predictions from position 1 on.
    seqs = list(
        iter_sequences(str(tiny_corpus_dir), model.tokenize, seq_len=16, bos_id=model.bos_id)
    )
    tokens = torch.tensor([s.tokens for s in seqs[:20]])
    ref = fresh_hooked(tiny_model_dir)(tokens, return_type="loss", loss_per_token=True)
    assert m["loss_clean"] == pytest.approx(ref[:, 1:].mean().item(), abs=1e-5)


def test_an_sae_that_outputs_nothing_recovers_none(model, tiny_corpus_dir):
    eye = torch.eye(D)
    m = evaluate_sae(
        standard_sae(torch.cat([eye, -eye], 1), torch.zeros(2 * D, D)),
        model,
        eval_cfg(tiny_corpus_dir),
    )
    assert m["loss_spliced"] == pytest.approx(m["loss_zero_ablated"], abs=1e-5)
    assert m["loss_recovered"] == pytest.approx(0, abs=1e-4)
    assert m["fvu"] >= 1  # zeros explain no variance (more than 1 when the mean is not 0)
    assert m["loss_zero_ablated"] > m["loss_clean"]


def test_dead_and_dense_latents_are_counted(model, tiny_corpus_dir):
    eye = torch.eye(D)
    # Latents 2D..3D-1 have a bias that never lets them fire; the first 2D split x in two.
    w_enc = torch.cat([eye, -eye, torch.zeros(D, D)], dim=1)
    w_dec = torch.cat([eye, -eye, torch.zeros(D, D)], dim=0)
    b_enc = torch.cat([torch.zeros(2 * D), torch.full((D,), -1e6)])
    m = evaluate_sae(standard_sae(w_enc, w_dec, b_enc), model, eval_cfg(tiny_corpus_dir))
    acts_dead = D / (3 * D)
    assert m["dead_fraction"] == pytest.approx(acts_dead, abs=0.05)
    assert m["dense_fraction"] >= 0.5  # each +/- latent fires on roughly half the tokens


def _random_sae(seed: int = 0, width: int = 24) -> Sae:
    g = torch.Generator().manual_seed(seed)
    w_enc = torch.randn(D, width, generator=g) / D**0.5
    return standard_sae(w_enc, w_enc.T.clone() * 0.8)


def test_kl_and_the_epsilon_random_baseline_against_an_independent_run(
    model, tiny_corpus_dir, tiny_model_dir
):
    """KL(clean || spliced), KL(clean || ε-random) and ΔCE, recomputed here with a fresh
    TransformerLens run, its own hooks and torch's KL, the random directions drawn from
    the same seed in the same order."""
    sae = _random_sae()
    cfg = eval_cfg(tiny_corpus_dir)
    m = evaluate_sae(sae, model, cfg)
    seqs = list(iter_sequences(str(tiny_corpus_dir), model.tokenize, seq_len=16,
                               bos_id=model.bos_id, full_only=True))[: cfg.sequences]  # fmt: skip
    hooked = fresh_hooked(tiny_model_dir)
    gen = torch.Generator().manual_seed(cfg.seed)
    kl = {"spliced": 0.0, "random": 0.0}
    ce = {"clean": 0.0, "spliced": 0.0}
    n = 0
    for i in range(0, len(seqs), cfg.batch_size):
        tokens = torch.tensor([s.tokens for s in seqs[i : i + cfg.batch_size]])

        def run(make=None, tokens=tokens):
            def hook(act, hook):
                x = act[:, 1:].reshape(-1, D)
                act = act.clone()
                act[:, 1:] = make(x).reshape(act[:, 1:].shape)
                return act

            hooks = [(HOOK, hook)] if make else []
            with torch.no_grad():
                out = hooked.run_with_hooks(tokens, fwd_hooks=hooks)
            return torch.log_softmax(out[:, 1:-1].double(), -1)

        def recon(x):
            return sae.decode(sae.encode(x), x)

        def random(x):
            u = torch.randn(x.shape, generator=gen)
            return x + (x - recon(x)).norm(dim=-1, keepdim=True) * u / u.norm(dim=-1, keepdim=True)

        clean, spliced, moved = run(), run(recon), run(random)
        flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
        kl["spliced"] += torch.nn.functional.kl_div(
            flat(spliced), flat(clean), log_target=True, reduction="sum").item()  # fmt: skip
        kl["random"] += torch.nn.functional.kl_div(
            flat(moved), flat(clean), log_target=True, reduction="sum").item()  # fmt: skip
        targets = tokens[:, 2:].reshape(-1)
        ce["clean"] += torch.nn.functional.nll_loss(flat(clean), targets, reduction="sum").item()
        ce["spliced"] += torch.nn.functional.nll_loss(
            flat(spliced), targets, reduction="sum").item()  # fmt: skip
        n += targets.numel()
    assert m["kl_spliced"] == pytest.approx(kl["spliced"] / n, rel=1e-4)
    assert m["kl_epsilon_random"] == pytest.approx(kl["random"] / n, rel=1e-4)
    assert m["kl_ratio"] == pytest.approx(kl["spliced"] / kl["random"], rel=1e-3)
    assert m["delta_ce"] == pytest.approx((ce["spliced"] - ce["clean"]) / n, abs=1e-5)
    assert m["kl_spliced"] > 0 and m["kl_epsilon_random"] > 0


def test_a_perfect_sae_has_no_kl_and_no_baseline_to_divide_by(model, tiny_corpus_dir):
    m = evaluate_sae(perfect_sae(), model, eval_cfg(tiny_corpus_dir))
    assert m["kl_spliced"] == pytest.approx(0, abs=1e-6)
    assert m["kl_epsilon_random"] == pytest.approx(0, abs=1e-6)  # an error of length 0
    assert m["delta_ce"] == pytest.approx(0, abs=1e-5)


def test_epsilon_random_moves_each_row_by_its_error_length():
    g = torch.Generator().manual_seed(1)
    x, x_hat = torch.randn(50, D, generator=g), torch.randn(50, D, generator=g)
    moved = epsilon_random(x, x_hat, torch.Generator().manual_seed(2))
    torch.testing.assert_close((moved - x).norm(dim=-1), (x - x_hat).norm(dim=-1))
    cos = torch.nn.functional.cosine_similarity(moved - x, x_hat - x, dim=-1)
    assert cos.abs().mean() < 0.5  # not along the error: a random direction


def test_the_eval_sae_command_stores_its_metrics(tiny_model_dir, tiny_corpus_dir, tmp_path, capsys):
    folder = tmp_path / "perfect"
    sae = perfect_sae()
    save_sae(sae, folder)
    (folder / "metrics.json").write_text(json.dumps({"steps": 3}))
    args = ["eval-sae", str(folder), "--model", str(tiny_model_dir), "--corpus"]
    args += [str(tiny_corpus_dir), "--sequences", "12", "--seq-len", "16", "--device", "cpu"]
    assert cli.main(args) == 0
    record = json.loads((folder / "metrics.json").read_text())
    assert record["steps"] == 3  # training metrics kept
    assert record["eval"]["loss_recovered"] == pytest.approx(1, abs=1e-4)
    assert "recovered 100.0%" in capsys.readouterr().out


def test_eval_sae_rejects_a_mismatched_sae_in_one_line(
    tiny_model_dir, tiny_corpus_dir, tmp_path, capsys
):
    folder = tmp_path / "narrow"  # d_in 32 at a hook that is d_mlp = 64 wide
    cfg = SaeConfig(architecture="standard", d_in=32, d_sae=8, hook_name="blocks.0.mlp.hook_post")
    z = torch.zeros
    save_sae(
        Sae(cfg, {"W_enc": z(32, 8), "b_enc": z(8), "W_dec": z(8, 32), "b_dec": z(32)}), folder
    )
    args = ["eval-sae", str(folder), "--model", str(tiny_model_dir), "--corpus"]
    assert cli.main(args + [str(tiny_corpus_dir), "--seq-len", "16", "--sequences", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "d_in 32" in err and "64 wide" in err and len(err.splitlines()) == 1
