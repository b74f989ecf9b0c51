"""Source kinds in Neuronpedia's terms (``indexer/neuronpedia/kinds.py``): set names as
Neuronpedia's ``getSourceSetNameFromSource`` reads them, a transcoder's ``saelensConfig``,
and the kind an export without Spyglass's folder is read back as."""

from __future__ import annotations

import pytest

from indexer.neuronpedia import kinds
from spyglass import storage
from spyglass.transcoders import input_hook, output_hook


@pytest.mark.parametrize(
    ("name", "set_name"),
    [("5-mlp", "mlp"), ("7-tc-topk-skip-768", "tc-topk-skip-768"),
     ("12-res-topk-4608", "res-topk-4608"), ("mlp", "mlp")],
)  # fmt: skip
def test_a_source_id_is_layer_then_set(name, set_name):
    assert kinds.set_name(name) == set_name


def test_the_hooks_are_those_transcoders_use():
    assert kinds.transcoder_hook(3) == input_hook(3)
    assert kinds.hook_out(None, 3) == output_hook(3)


def _source(kind: str, info: dict | None) -> storage.SourceRow:
    return storage.SourceRow(1, 1, "2-tc-topk-24", kind, 2, input_hook(2), 24, "tc#2", info)


def test_a_transcoders_config_names_its_hooks_as_saelens_does():
    info = {"architecture": "topk_transcoder", "hook": input_hook(2), "hook_out": "x.out"}
    config = kinds.saelens_config(_source("transcoder", info))
    assert config == {**info, "hook_name": input_hook(2), "hook_name_out": "x.out"}
    assert kinds.saelens_config(_source("sae", info)) == info
    assert kinds.saelens_config(_source("transcoder", None)) is None


@pytest.mark.parametrize(
    ("name", "hook", "set_type", "config", "kind"),
    [
        ("3-anything", "", "transcoder", None, "transcoder"),  # Spyglass's set type
        ("3-anything", "blocks.3.hook_resid_post", "sae", None, "sae"),
        ("3-gemmascope-transcoder-16k", "", "", None, "transcoder"),  # Neuronpedia's name
        ("3-x", "", "", {"architecture": "jumprelu_skip_transcoder"}, "transcoder"),
        ("3-x", "", "", {"metadata": {"hook_name_out": "blocks.3.hook_mlp_out"}}, "transcoder"),
        ("3-x", "blocks.3.ln2.hook_normalized", "", None, "transcoder"),
        ("3-x", "blocks.3.mlp.hook_post", "", None, "mlp"),
        ("3-mlp", "", "", None, "mlp"),
        ("3-res-16k", "blocks.3.hook_resid_post", "", {"architecture": "jumprelu"}, "sae"),
    ],
)
def test_the_kind_of_a_source_without_spyglass_folder(name, hook, set_type, config, kind):
    assert kinds.read_kind(name, hook, set_type, config) == kind


def test_a_foreign_transcoders_info_has_its_output_hook():
    assert kinds.transcoder_info(None, 4) == {"hook_out": output_hook(4)}
    config = {"metadata": {"hook_name": "h.in", "hook_name_out": "h.out"}}
    assert kinds.transcoder_info(config, 4)["hook_out"] == "h.out"
    assert kinds.config_hook(config) == "h.in"
