"""Every URL the server links to, built in one place; views and templates (``urls.*``) use it.

Path segments are percent-quoted, so a model or source name never breaks a link.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode


def _q(part: str | int) -> str:
    return quote(str(part), safe="")


def json(url: str) -> str:
    """The JSON twin of a page URL: its path plus ``.json``, the query kept."""
    path, sep, query = url.partition("?")
    return f"{path}.json{sep}{query}"


def home() -> str:
    return "/"


def model(slug: str) -> str:
    return f"/{_q(slug)}"


def source(slug: str, name: str, **query: str | int) -> str:
    url = f"{model(slug)}/{_q(name)}"
    return f"{url}?{urlencode(query)}" if query else url


def search(slug: str, **query: str | int) -> str:
    url = f"{model(slug)}/search"
    query = {k: v for k, v in query.items() if v is not None and v != ""}
    return f"{url}?{urlencode(query)}" if query else url


def labels(slug: str, name: str, index: int) -> str:
    """Where a label of the unit is posted."""
    return f"/api{source(slug, name)}/{index}/labels"


def random_unit(slug: str, name: str) -> str:
    return f"{source(slug, name)}/random"


def unit(slug: str, name: str, index: int, *, prompt: str | None = None) -> str:
    url = f"{source(slug, name)}/{index}"
    return f"{url}?{urlencode({'prompt': prompt}, quote_via=quote)}" if prompt else url


def unit_activations(slug: str, name: str, index: int) -> str:
    """The unit page's live activations fragment (GET, htmx)."""
    return f"{unit(slug, name, index)}/activations"


def unit_steer(slug: str, name: str, index: int) -> str:
    """The unit page's steering fragment (GET, htmx)."""
    return f"{unit(slug, name, index)}/steer"


def example(slug: str, name: str, index: int, rank: int) -> str:
    """A top example shown in its whole sequence (htmx fragment)."""
    return f"{unit(slug, name, index)}/examples/{rank}"


def ablation(slug: str, name: str, index: int, rank: int, mode: str = "zero") -> str:
    url = f"{example(slug, name, index, rank)}/ablation"
    return url if mode == "zero" else f"{url}?mode={mode}"


def sequence(slug: str, seq_id: int) -> str:
    return f"{model(slug)}/sequences/{seq_id}"


def prompt(slug: str, **query) -> str:
    url = f"{model(slug)}/prompt"
    return f"{url}?{urlencode(query, doseq=True)}" if query else url


def steer(slug: str, query: list[tuple[str, str]] | None = None) -> str:
    url = f"{model(slug)}/steer"
    return f"{url}?{urlencode(query)}" if query else url


def steer_eval(slug: str) -> str:
    return f"{model(slug)}/steer/eval"


def atp(slug: str, **query) -> str:
    url = f"{model(slug)}/atp"
    return f"{url}?{urlencode(query, doseq=True)}" if query else url


def attribution(slug: str, **query) -> str:
    url = f"{model(slug)}/attribution"
    return f"{url}?{urlencode(query)}" if query else url
