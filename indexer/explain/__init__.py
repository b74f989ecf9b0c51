"""Explanations of units and their scores, made from what an index already stores.

- ``windows``: a unit's top examples and interval samples as token windows, split into
  the examples an explainer sees and the held-out ones its explanation is scored on;
- ``token_pattern``: the offline, model-free explainer;
- ``simulation``: the offline scorer (token rules of an explanation against the real
  activations), with bootstrap intervals;
- ``run``: ``spyglass explain``: every unit of the chosen sources, resumable.
"""
