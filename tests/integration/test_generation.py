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


def greedy_by_recompute(reference, prompt: list[int], n: int, steers: list[NeuronSteer]):
    """Greedy continuation recomputing the whole sequence each step: no cache at all. A
    prompt-only edit touches positions < len(prompt) in every recompute, which is what
    a cache filled by the edited prompt pass holds."""

    def edit(act, hook, s: NeuronSteer):
        upto = len(prompt) if s.prompt_only else act.shape[1]
        if s.clamp:
            act[:, :upto, s.neuron] = s.coefficient
        else:
            act[:, :upto, s.neuron] += s.coefficient
        return act

    hooks = [(mlp_hook(s.layer), lambda act, hook, s=s: edit(act, hook, s)) for s in steers]
    tokens = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            logits = reference.run_with_hooks(torch.tensor([tokens]), fwd_hooks=hooks)
            tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt) :]


@pytest.mark.parametrize(
    "steers",
    [
        [],
        [NeuronSteer(0, 3, 25.0)],
        [NeuronSteer(1, 60, -40.0)],
        [NeuronSteer(0, 3, 25.0), NeuronSteer(1, 60, -40.0)],
        [NeuronSteer(1, 60, 30.0, clamp=True)],
        [NeuronSteer(0, 3, 40.0, prompt_only=True), NeuronSteer(1, 7, 5.0, clamp=True)],
        [NeuronSteer(1, 60, 60.0, clamp=True, prompt_only=True)],
    ],
    ids=["plain", "up", "down", "two", "clamp", "prompt-only-and-clamp", "clamp-prompt-only"],
)
def test_greedy_generation_equals_recompute_without_cache(model, reference, steers):
    prompt = model.encode_prompt("the quick brown fox")
    got = model.generate(prompt, max_new_tokens=10, temperature=0, seed=0, steer=steers)
    # eos stops generation early; compare what was generated.
    assert got == greedy_by_recompute(reference, prompt, len(got), steers)[: len(got)]
    assert got


def test_sampling_is_seeded_and_steering_changes_the_text(model):
    prompt = model.encode_prompt("the fox")
    run = dict(max_new_tokens=12, temperature=1.0)
    assert model.generate(prompt, **run, seed=3) == model.generate(prompt, **run, seed=3)
    assert model.generate(prompt, **run, seed=3) != model.generate(prompt, **run, seed=4)
    pushed = model.generate(prompt, **run, seed=3, steer=[NeuronSteer(1, 60, 200.0)])
    assert pushed != model.generate(prompt, **run, seed=3)


def test_the_steering_variants_really_differ(model):
    """The recompute comparisons above mean something: each variant changes the text."""
    prompt = model.encode_prompt("the quick brown fox")
    run = dict(max_new_tokens=10, temperature=0, seed=0)
    texts = {
        name: tuple(model.generate(prompt, **run, steer=steers))
        for name, steers in {
            "plain": [],
            "all": [NeuronSteer(1, 60, 60.0, clamp=True)],
            "prompt": [NeuronSteer(1, 60, 60.0, clamp=True, prompt_only=True)],
        }.items()
    }
    assert len(set(texts.values())) == 3, texts
    # The first new token comes from the prompt pass alone: prompt-only and all agree there.
    assert texts["all"][0] == texts["prompt"][0]
