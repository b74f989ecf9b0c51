"""The token-pattern explainer: offline and model-free, it says in one line what a unit's
stored statistics already show, with the evidence behind it.

From the windows an explainer may see (``windows.UnitWindows.shown``):
- the tokens that carry the examples' activations most often, with their share;
- the token before them, where one recurs in at least ``CONTEXT_SHARE`` of the examples;
and from the logit effects, the tokens the unit promotes and suppresses most. Rendered as
``" thing" (35%), " town" (20%) after "the" (60%); promotes "next", "."``.
"""

from __future__ import annotations

import json
from collections import Counter

from indexer.explain.windows import UnitWindows

METHOD = "token-pattern"
VERSION = 1
"""Bumped when the explanations it writes change: a re-run then explains again."""
MAX_TOKENS = 4
TOKEN_SHARE = 0.08
"""A token is named when it carries at least this share of the examples (the most
frequent one always is)."""
CONTEXT_SHARE = 0.3
LOGIT_TOKENS = 3


def quote(text: str) -> str:
    """A token as the explanation shows it: a JSON string, so spaces, quotes and newlines
    stay visible and the scorer can read it back."""
    return json.dumps(text, ensure_ascii=False)


def explain(unit: UnitWindows, logits: dict, vocab: dict[int, str]) -> tuple[str, dict] | None:
    """The unit's explanation and its evidence; None when it has no examples to go on."""
    shown = unit.shown
    if not shown:
        return None
    n = len(shown)
    carried = Counter(int(w.tokens[w.at]) for w in shown)
    named = [
        (t, c) for i, (t, c) in enumerate(carried.most_common(MAX_TOKENS))
        if i == 0 or c / n >= TOKEN_SHARE
    ]  # fmt: skip
    before = Counter(int(w.tokens[w.at - 1]) for w in shown if w.at > 0)
    context = None
    if before:
        t, c = before.most_common(1)[0]
        if c / n >= CONTEXT_SHARE:
            context = (t, c)
    promotes = [t for t, _ in logits.get("top", [])[:LOGIT_TOKENS]]
    suppresses = [t for t, _ in logits.get("bottom", [])[:LOGIT_TOKENS]]

    def share(c: int) -> str:
        return f"{100 * c / n:.0f}%"

    text = ", ".join(f"{quote(vocab.get(t, '?'))} ({share(c)})" for t, c in named)
    if context is not None:
        text += f" after {quote(vocab.get(context[0], '?'))} ({share(context[1])})"
    if promotes:
        text += "; promotes " + ", ".join(quote(vocab.get(t, "?")) for t in promotes)
    if suppresses:
        text += "; suppresses " + ", ".join(quote(vocab.get(t, "?")) for t in suppresses)
    evidence = {
        "examples": n,
        "tokens": [[t, vocab.get(t, "?"), c / n] for t, c in named],
        "before": [context[0], vocab.get(context[0], "?"), context[1] / n] if context else None,
        "promotes": promotes,
        "suppresses": suppresses,
    }
    return text, evidence
