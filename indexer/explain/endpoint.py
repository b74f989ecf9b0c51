"""An OpenAI-compatible chat endpoint (vLLM, llama.cpp's server, Ollama, ``transformers
serve``, OpenAI itself), as the LLM explainer and scorers call it.

Every call is retried with exponential backoff (and the server's ``Retry-After`` where it
sends one) when the endpoint is down, times out, is rate-limited, fails on its side, or
answers something its caller cannot parse. After ``attempts`` tries the call raises
``EndpointFailure`` with the last reason, which the caller records against the unit: a
failure is never turned into an explanation or a score.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

PREFIX = "openai:"
API_KEY_ENV = "SPYGLASS_OPENAI_API_KEY"
"""The endpoint's key (``OPENAI_API_KEY`` is read too); local servers need none."""
RETRY_TEMPERATURE = 0.7

for _name in ("httpx", "httpx2"):  # the OpenAI client's HTTP libraries: not a line per call
    logging.getLogger(_name).setLevel(logging.WARNING)


class EndpointFailure(Exception):
    """The endpoint gave no usable answer after every attempt: the reason, in one line."""


class Malformed(Exception):
    """An answer the caller could not parse: retried like a server error."""


def parse_spec(spec: str) -> str:
    """The base URL of ``openai:URL`` (``/v1`` is added when the URL has no path).
    ValueError for anything else."""
    if not spec.startswith(PREFIX):
        raise ValueError(f"--explainer: {spec!r} is neither token-pattern nor openai:URL")
    url = spec[len(PREFIX) :].rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https") or not rest:
        raise ValueError(f"--explainer: {url!r} is not an http(s) URL")
    if "/" not in rest:
        url += "/v1"
    return url


@dataclass
class Usage:
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Endpoint:
    """One model behind one OpenAI-compatible chat endpoint."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        attempts: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        timeout: float = 120.0,
    ) -> None:
        from openai import OpenAI

        key = os.environ.get(API_KEY_ENV) or os.environ.get("OPENAI_API_KEY") or "none"
        self.url = url
        self.model = model
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        # The client's own retries are off: these retries also cover malformed answers.
        self._client = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=timeout)
        self.usage = Usage()
        self._lock = threading.Lock()

    def check(self) -> None:
        """One short call, without retries: EndpointFailure (one line) when the endpoint
        cannot be reached or refuses the model, before any unit is tried."""
        try:
            self._chat([{"role": "user", "content": "Say OK."}], max_tokens=2)
        except Exception as exc:  # noqa: BLE001 -- any failure is the user's to see
            raise EndpointFailure(
                f"the explainer at {self.url} ({self.model}): {_reason(exc)}"
            ) from None

    def ask(
        self,
        messages: list[dict],
        parse: Callable[[str], T],
        *,
        max_tokens: int = 200,
    ) -> T:
        """The parsed answer to ``messages``; ``parse`` raises Malformed for an answer it
        cannot use. EndpointFailure after ``attempts`` failed tries."""
        reason, after, temperature = "", None, 0.0
        for attempt in range(self.attempts):
            if attempt:
                with self._lock:
                    self.usage.retries += 1
                time.sleep(self._delay(attempt, after))
                after = None
            try:
                return parse(self._chat(messages, max_tokens=max_tokens, temperature=temperature))
            except Malformed as exc:
                reason = f"malformed answer: {exc}"
                temperature = RETRY_TEMPERATURE  # the same question at 0 gives the same answer
            except Exception as exc:  # noqa: BLE001 -- retried, then reported per unit
                if not _retryable(exc):
                    raise EndpointFailure(_reason(exc)) from None
                reason, after = _reason(exc), _retry_after(exc)
        raise EndpointFailure(f"{reason} (after {self.attempts} attempts)")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, at least the server's Retry-After."""
        wait = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(self.max_backoff, wait)

    def _chat(self, messages: list[dict], *, max_tokens: int, temperature: float = 0.0) -> str:
        with self._lock:
            self.usage.calls += 1
        out = self._client.chat.completions.create(
            model=self.model,
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
        )
        if out.usage is not None:
            with self._lock:
                self.usage.prompt_tokens += out.usage.prompt_tokens or 0
                self.usage.completion_tokens += out.usage.completion_tokens or 0
        if not out.choices:
            raise Malformed("no choices in the response")
        return out.choices[0].message.content or ""


def _retryable(exc: Exception) -> bool:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    # Down, timed out, or an answer that is not the API's JSON.
    return isinstance(exc, openai.APIError | ValueError)


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _reason(exc: Exception) -> str:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {one_line(str(exc.message))}"
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return f"cannot connect ({one_line(str(cause))})"
    return f"{type(exc).__name__}: {one_line(str(exc))}"


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
