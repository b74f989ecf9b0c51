"""Neuronpedia's export records, as JSON Schemas: the field names and types of its
database tables (``apps/webapp/prisma/schema.prisma`` and its SQL migrations in
hijohnnylin/neuronpedia, read at commit ebb8426), which its importer
(``apps/webapp/app/api/admin/import/route.ts`` with ``apps/webapp/lib/db/import.ts``)
fills from the export's JSONL lines.

What the importer needs, and the schemas check:
- a NOT NULL column without a database default must be in every line (``id`` included:
  Prisma's ``cuid()`` default is made by its client, which the importer does not use);
- the columns come from the first line's keys, so every line of a file has the same keys
  (a key missing later would be an explicit NULL);
- the metadata rows (``model.jsonl``, ``source.jsonl``, ...) go to Prisma's ``create``,
  which refuses unknown keys (no additional properties anywhere) and a JSON null for a
  ``Json?`` field (``json`` below is any value but null);
- the five ``config/`` files (``CONFIG_FILES``) must exist, even with no line.

``tests/postgres/test_neuronpedia_schema.py`` loads an export into Neuronpedia's own tables
with its importer's statements; these schemas are the quick check of the same rules.
"""

from __future__ import annotations

_TYPES = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "[str]": {"type": "array", "items": {"type": "string"}},
    "[int]": {"type": "array", "items": {"type": "integer"}},
    "[float]": {"type": "array", "items": {"type": "number"}},
    "json": {"not": {"type": "null"}},
    "time": {"type": "string", "format": "date-time"},
    "index": {"type": ["string", "integer"]},  # TEXT, written as a number by converters
}


def _schema(title: str, fields: dict[str, str], required: set[str]) -> dict:
    """``fields``: name -> type, ``?`` marking a nullable column."""
    props = {}
    for name, kind in fields.items():
        base = dict(_TYPES[kind.rstrip("?")])
        if kind.endswith("?") and "type" in base:
            base["type"] = [*([base["type"]] if isinstance(base["type"], str) else base["type"]),
                            "null"]  # fmt: skip
        props[name] = base
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": props,
        "required": sorted(required),
        "additionalProperties": False,
    }


FEATURE = _schema(
    "Neuron",
    {
        "modelId": "str", "layer": "str", "index": "index", "sourceSetName": "str?",
        "creatorId": "str?", "createdAt": "time", "maxActApprox": "float?",
        "hasVector": "bool", "vector": "[float]", "vectorLabel": "str?",
        "vectorDefaultSteerStrength": "float?", "hookName": "str?",
        "topkCosSimIndices": "[int]", "topkCosSimValues": "[float]",
        "neuron_alignment_indices": "[int]", "neuron_alignment_values": "[float]",
        "neuron_alignment_l1": "[float]", "correlated_neurons_indices": "[int]",
        "correlated_neurons_pearson": "[float]", "correlated_neurons_l1": "[float]",
        "correlated_features_indices": "[int]", "correlated_features_pearson": "[float]",
        "correlated_features_l1": "[float]", "neg_str": "[str]", "neg_values": "[float]",
        "pos_str": "[str]", "pos_values": "[float]", "frac_nonzero": "float",
        "freq_hist_data_bar_heights": "[float]", "freq_hist_data_bar_values": "[float]",
        "logits_hist_data_bar_heights": "[float]", "logits_hist_data_bar_values": "[float]",
        "decoder_weights_dist": "[float]",
    },
    {"modelId", "layer", "index", "hasVector", "frac_nonzero"},
)  # fmt: skip

ACTIVATION = _schema(
    "Activation",
    {
        "id": "str", "modelId": "str", "layer": "str", "index": "index", "creatorId": "str",
        "createdAt": "time", "tokens": "[str]", "values": "[float]", "maxValue": "float",
        "maxValueTokenIndex": "int", "minValue": "float", "dataIndex": "str?",
        "dataSource": "str?", "binMin": "float?", "binMax": "float?",
        "binContains": "float?", "qualifyingTokenIndex": "int?",
    },
    {"id", "modelId", "layer", "index", "creatorId", "maxValue", "maxValueTokenIndex",
     "minValue"},
)  # fmt: skip

EXPLANATION = _schema(
    "Explanation",
    {
        "id": "str", "modelId": "str", "layer": "str", "index": "index",
        "description": "str", "authorId": "str", "typeName": "str?",
        "explanationModelName": "str?", "notes": "str?", "createdAt": "time",
        "updatedAt": "time",
    },
    {"id", "modelId", "layer", "index", "description", "authorId"},
)  # fmt: skip

MODEL = _schema(
    "Model",
    {
        "id": "str", "displayNameShort": "str", "displayName": "str", "creatorId": "str",
        "tlensId": "str?", "dimension": "int?", "visibility": "str", "inferenceEnabled": "bool",
        "instruct": "bool", "layers": "int", "neuronsPerLayer": "int", "owner": "str",
        "createdAt": "time", "updatedAt": "time",
    },
    {"id", "creatorId", "layers", "neuronsPerLayer", "owner"},
)  # fmt: skip
MODEL["properties"]["visibility"]["enum"] = ["PUBLIC", "UNLISTED", "PRIVATE"]

SOURCESET = _schema(
    "SourceSet",
    {
        "modelId": "str", "name": "str", "hasDashboards": "bool", "visibility": "str",
        "description": "str", "type": "str", "creatorName": "str", "urls": "[str]",
        "creatorId": "str", "createdAt": "time",
    },
    {"modelId", "name", "description", "creatorName", "creatorId"},
)  # fmt: skip

SOURCE = _schema(
    "Source",
    {
        "id": "str", "modelId": "str", "hasDashboards": "bool", "inferenceEnabled": "bool",
        "saelensConfig": "json", "visibility": "str", "setName": "str", "creatorId": "str",
        "num_prompts": "int?", "num_tokens_in_prompt": "int?", "dataset": "str?",
        "notes": "str?", "createdAt": "time",
    },
    {"id", "modelId", "setName", "creatorId"},
)  # fmt: skip

EXPLANATION_TYPE = _schema(
    "ExplanationType",
    {
        "name": "str", "displayName": "str", "description": "str", "featured": "bool",
        "isAttention": "bool", "url": "str?", "creatorName": "str", "creatorId": "str",
        "createdAt": "time", "updatedAt": "time",
    },
    {"name", "displayName", "description", "creatorName", "creatorId"},
)  # fmt: skip

EXPLANATION_MODEL_TYPE = _schema(
    "ExplanationModelType",
    {
        "name": "str", "displayName": "str", "description": "str", "featured": "bool",
        "url": "str?", "creatorName": "str", "createdAt": "time", "updatedAt": "time",
    },
    {"name", "displayName", "description", "creatorName"},
)  # fmt: skip

EXPLANATION_SCORE_MODEL = _schema(
    "ExplanationScoreModel",
    {
        "name": "str", "displayName": "str", "description": "str", "featured": "bool",
        "openRouterModelId": "str?", "url": "str?", "creatorName": "str",
        "createdAt": "time", "updatedAt": "time",
    },
    {"name", "displayName", "description", "creatorName"},
)  # fmt: skip

EXPLANATION_SCORE_TYPE = _schema(
    "ExplanationScoreType",
    {
        "name": "str", "displayName": "str", "description": "str", "featured": "bool",
        "isAttention": "bool", "scoreDescription": "str?", "scorerModel": "str?",
        "settings": "str?", "url": "str?", "creatorName": "str", "creatorId": "str",
        "createdAt": "time", "updatedAt": "time",
    },
    {"name", "displayName", "description", "creatorName", "creatorId"},
)  # fmt: skip

EVAL_TYPE = _schema(
    "EvalType",
    {
        "name": "str", "displayName": "str", "description": "str",
        "longerDescription": "str", "outputSchema": "json", "featured": "bool",
        "url": "str?", "createdAt": "time", "updatedAt": "time",
    },
    {"name", "displayName", "description", "outputSchema"},
)  # fmt: skip

CONFIG_FILES = (
    "explanation_model_type.jsonl",
    "explanation_type.jsonl",
    "explanation_score_model.jsonl",
    "explanation_score_type.jsonl",
    "eval_type.jsonl",
)
"""What Neuronpedia's import reads from ``config/`` before anything else, in its order."""

FILES = {
    "features": FEATURE,
    "activations": ACTIVATION,
    "explanations": EXPLANATION,
    "model.jsonl": MODEL,
    "sourceset.jsonl": SOURCESET,
    "source.jsonl": SOURCE,
    "explanation_type.jsonl": EXPLANATION_TYPE,
    "explanation_model_type.jsonl": EXPLANATION_MODEL_TYPE,
    "explanation_score_model.jsonl": EXPLANATION_SCORE_MODEL,
    "explanation_score_type.jsonl": EXPLANATION_SCORE_TYPE,
    "eval_type.jsonl": EVAL_TYPE,
}
"""Each file or batch folder of an export and the schema of its lines."""

BOT = "clkht01d40000jv08hvalcvly"
"""The creator id Neuronpedia's exports carry (its seeded bot user)."""
