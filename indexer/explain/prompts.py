"""What the LLM explainer and scorers send to an endpoint, and how their answers are read.

The explainer's prompt combines the two published protocols: Delphi's (examples drawn
from the top and from across the activation range, the active tokens marked
``<<like this>>``) and Neuronpedia's (the strongest examples beside the tokens the unit's
output promotes and suppresses). The scorers follow Delphi's detection (does the
explanation pick out the examples where the unit fires, against ones where it does not?)
and fuzzing (are the marked tokens the ones the explanation describes?): a batch of
numbered examples, answered with a list of 0s and 1s.
"""

from __future__ import annotations

import re

import numpy as np

from indexer.explain.endpoint import Malformed, one_line
from indexer.explain.windows import Window

VERSION = 1
"""Bumped when a prompt changes: a re-run explains again."""
MAX_EXPLANATION = 300
QUOTED = 80
"""Characters of an answer quoted in a malformed answer's reason."""
"""Characters an explanation may have: a longer answer is malformed."""
OPEN, CLOSE = "<<", ">>"

EXPLAIN_SYSTEM = (
    "You study the internal units of a language model. You are shown texts on which one "
    "unit is active; the tokens where it is active are marked <<like this>>, and each text "
    "ends with the unit's strongest activation in it, on a scale of 0 to 10. You may also "
    "be shown the tokens that the unit makes the model more and less likely to say next.\n"
    "Say in a short phrase what the unit responds to: the words, the context around them, "
    "or both. Name the exact tokens in double quotes where that helps. Be concise: do not "
    "list the examples, and do not mention the markers.\n"
    "The last line of your answer must be: [EXPLANATION]: <your phrase>"
)

DETECTION_SYSTEM = (
    "You check explanations of the units of a language model. You are given an "
    "explanation of what one unit responds to, then numbered texts. For each text, "
    "answer 1 if the unit would be active somewhere in it according to the explanation, "
    "else 0.\nAnswer with a list of 0s and 1s, one per text, in order, for example "
    "[1, 0, 0, 1], and nothing else."
)

FUZZING_SYSTEM = (
    "You check explanations of the units of a language model. You are given an "
    "explanation of what one unit responds to, then numbered texts in which some tokens "
    "are marked <<like this>>. For each text, answer 1 if the marked tokens are ones the "
    "explanation describes, else 0.\nAnswer with a list of 0s and 1s, one per text, in "
    "order, for example [1, 0, 0, 1], and nothing else."
)

# One worked example each, made up: small models follow a format they have seen answered.
ASK = "What does the unit respond to? Answer with one line: [EXPLANATION]: <a short phrase>"
EXPLAIN_SHOT = (
    "Example: She fed the<< dog>> and the<< cat>> at noon. (activation 10)\n"
    "Example: A<< puppy>> slept by the door. (activation 6)\n"
    'Tokens it promotes: " barked", " food"\n\n' + ASK,
    '[EXPLANATION]: pets, mostly "dog" and "cat"',
)
DETECTION_SHOT = ('the word "dog"', ["The cat sat on the mat.", "A dog barked at night."], "[0, 1]")
FUZZING_SHOT = ('the word "dog"', ["A<< dog>> barked.", "The<< cat>> sat on the mat."], "[1, 0]")


def render(window: Window, vocab: dict[int, str], marked: np.ndarray | None = None) -> str:
    """The window as text with the tokens ``marked`` [w] bool enclosed in ``<< >>``
    (consecutive ones together); no marks when None. Tokens outside the unit's statistics
    (the first ``skip_first`` of a sequence: NaN activations) are left out."""
    out: list[str] = []
    inside = False
    for i, t in enumerate(window.tokens.tolist()):
        if not np.isfinite(window.acts[i]):
            continue
        on = bool(marked[i]) if marked is not None else False
        if on and not inside:
            out.append(OPEN)
        elif not on and inside:
            out.append(CLOSE)
        inside = on
        out.append(vocab.get(t, "?"))
    if inside:
        out.append(CLOSE)
    return "".join(out).replace("\n", "\\n")


def active(window: Window, threshold: float) -> np.ndarray:
    """[w] bool: the tokens where the unit is active (at least ``threshold``)."""
    return np.nan_to_num(window.acts, nan=0.0) >= threshold


def explain_messages(
    examples: list[Window],
    max_act: float,
    threshold: float,
    vocab: dict[int, str],
    promotes: list[str],
    suppresses: list[str],
) -> list[dict]:
    lines = []
    for w in examples:
        level = round(10 * w.value / max_act) if max_act > 0 else 0
        lines.append(f"Example: {render(w, vocab, active(w, threshold))} (activation {level})")
    if promotes:
        lines.append("Tokens it promotes: " + ", ".join(_quote(t) for t in promotes))
    if suppresses:
        lines.append("Tokens it suppresses: " + ", ".join(_quote(t) for t in suppresses))
    lines.append("\n" + ASK)
    return [
        {"role": "system", "content": EXPLAIN_SYSTEM},
        {"role": "user", "content": EXPLAIN_SHOT[0]},
        {"role": "assistant", "content": EXPLAIN_SHOT[1]},
        {"role": "user", "content": "\n".join(lines)},
    ]


_MARKER = re.compile(r"\[?\s*EXPLANATION\s*\]?\s*:\s*", re.I)


def parse_explanation(answer: str) -> str:
    """The explanation in an answer: the line after its last ``[EXPLANATION]:`` marker,
    or the whole answer where it is one line without one. Malformed otherwise, and when
    the explanation is empty, has no letters or is longer than ``MAX_EXPLANATION``."""
    marks = list(_MARKER.finditer(answer))
    if marks:
        lines = answer[marks[-1].end() :].strip().splitlines()
        text = lines[0] if lines else ""
    else:
        lines = [line for line in answer.splitlines() if line.strip()]
        if len(lines) > 1:
            raise Malformed(f"no [EXPLANATION]: line in {one_line(answer, QUOTED)!r}")
        text = lines[0] if lines else ""
    text = text.strip().strip("*_`").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and text.count(text[0]) == 2:
        text = text[1:-1].strip()
    if not text:
        raise Malformed("an empty explanation")
    if not any(c.isalpha() for c in text):
        raise Malformed(f"an explanation without words: {one_line(text, QUOTED)!r}")
    if text.startswith("<") and text.endswith(">"):
        raise Malformed(f"the format's placeholder, not an explanation: {one_line(text, QUOTED)!r}")
    if len(text) > MAX_EXPLANATION:
        raise Malformed(f"an explanation of {len(text)} characters (at most {MAX_EXPLANATION})")
    return text


def judge_messages(system: str, explanation: str, texts: list[str]) -> list[dict]:
    """A judging call: ``system`` is ``DETECTION_SYSTEM`` or ``FUZZING_SYSTEM``."""
    shot = DETECTION_SHOT if system == DETECTION_SYSTEM else FUZZING_SHOT
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": _judge_request(shot[0], shot[1])},
        {"role": "assistant", "content": shot[2]},
        {"role": "user", "content": _judge_request(explanation, texts)},
    ]


def _judge_request(explanation: str, texts: list[str]) -> str:
    numbered = "\n".join(f"{i}. {t}" for i, t in enumerate(texts, 1))
    return (
        f"Explanation: {explanation}\n\nTexts:\n{numbered}\n\n"
        f"Answer with a list of {len(texts)} 0s and 1s."
    )


_LIST = re.compile(r"\[([^\[\]]*)\]")


def parse_judgements(answer: str, n: int) -> list[int]:
    """The first ``[...]`` list of exactly ``n`` 0s and 1s in an answer; Malformed
    otherwise."""
    wrong = None
    for m in _LIST.finditer(answer):
        items = [x.strip().strip("'\"") for x in m.group(1).split(",") if x.strip()]
        if items and all(x in ("0", "1") for x in items):
            if len(items) == n:
                return [int(x) for x in items]
            wrong = len(items)
    if wrong is not None:
        raise Malformed(f"{wrong} judgements for {n} texts")
    raise Malformed(f"no list of 0s and 1s in {one_line(answer, QUOTED)!r}")


def _quote(text: str) -> str:
    return '"' + text.replace("\n", "\\n") + '"'
