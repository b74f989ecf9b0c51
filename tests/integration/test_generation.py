"""Generation with a KV cache and steering hooks, against fresh cache-free TransformerLens runs."""

from __future__ import annotations

import pytest
import torch
from index_checks import fresh_hooked

from spyglass.model import NeuronSteer, load_model, mlp_hook


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir), "cpu")


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return fresh_hooked(tiny_model_dir)


def greedy_by_recompute(reference, prompt: list[int], n: int, steer: NeuronSteer | None):
    """Greedy continuation recomputing the whole sequence each step: no cache at all."""

    def add(act, hook):
        act[..., steer.neuron] += steer.coefficient
        return act

    hooks = [(mlp_hook(steer.layer), add)] if steer else []
    tokens = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            logits = reference.run_with_hooks(torch.tensor([tokens]), fwd_hooks=hooks)
            tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt) :]


@pytest.mark.parametrize(
    "steer", [None, NeuronSteer(0, 3, 25.0), NeuronSteer(1, 60, -40.0)], ids=["plain", "up", "down"]
)
def test_greedy_generation_equals_recompute_without_cache(model, reference, steer):
    prompt = model.encode_prompt("the quick brown fox")
    got = model.generate(
        prompt, max_new_tokens=10, temperature=0, seed=0, steer=[steer] if steer else []
    )
    # eos stops generation early; compare what was generated.
    assert got == greedy_by_recompute(reference, prompt, len(got), steer)[: len(got)]
    assert got


def test_sampling_is_seeded_and_steering_changes_the_text(model):
    prompt = model.encode_prompt("the fox")
    run = dict(max_new_tokens=12, temperature=1.0)
    assert model.generate(prompt, **run, seed=3) == model.generate(prompt, **run, seed=3)
    assert model.generate(prompt, **run, seed=3) != model.generate(prompt, **run, seed=4)
    pushed = model.generate(prompt, **run, seed=3, steer=[NeuronSteer(1, 60, 200.0)])
    assert pushed != model.generate(prompt, **run, seed=3)
