"""What the stores that talk to a provider's HTTP API share.

A rate limit is waited out only briefly: at most :data:`MAX_RETRIES` waits,
each as long as the server's ``Retry-After`` asks but never longer than
:data:`MAX_RETRY_WAIT` seconds, so that a run never hangs for minutes. A
network failure is described by its innermost OS-level reason ("Connection
refused"), not by urllib3's paragraph, and any text a server sends back is
cut to one line with the credentials removed before it reaches a message.
"""
from __future__ import annotations

from collections.abc import Iterable

MAX_RETRIES = 3
MAX_RETRY_WAIT = 30.0


def retry_after(value: str | None, attempt: int) -> float:
    """Seconds to wait before retrying a 429: Retry-After, else a short backoff."""
    try:
        return max(0.0, float(value)) if value is not None else float(2**attempt)
    except ValueError:
        return float(2**attempt)


def network_cause(err: BaseException) -> str | None:
    """The innermost OS-level reason of a connection failure, or None.

    Follows causes, contexts, ``reason`` attributes and arguments, since
    requests and urllib3 wrap the socket's error several layers deep.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        reason = getattr(current, "reason", None)
        linked = [current.__cause__, current.__context__, reason, *current.args]
        todo.extend(e for e in linked if isinstance(e, BaseException))
    return None


def one_line(text: str, secrets: Iterable[str] = (), limit: int = 200) -> str:
    """Server text made fit for a message: one line, short, credentials replaced."""
    line = " ".join(str(text).split())
    for secret in secrets:
        if secret:
            line = line.replace(secret, "***")
    return line if len(line) <= limit else line[: limit - 3] + "..."
