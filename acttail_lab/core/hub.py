"""Whether the Hugging Face Hub can be used from this process: offline variables first, then a short probe.

:func:`hub_reachable` is False when ``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE`` or ``TRANSFORMERS_OFFLINE``
is set to a true value, or when ``huggingface.co:443`` does not accept a TCP connection within ``timeout``
seconds; the answer is remembered for the process. Used to choose lm-eval's own task data over the local
copies, and to fail early (before a model loads) for corpora that only the Hub serves (``wikitext2``).
"""
from __future__ import annotations

import functools
import os
import socket

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
HUB_HOST = ("huggingface.co", 443)


def offline_variable_set() -> str | None:
    """The first Hugging Face offline variable set to a true value, else None."""
    return next((v for v in OFFLINE_VARIABLES if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")),
                None)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """True when no offline variable is set and the Hub answers a TCP connection within ``timeout`` s."""
    if offline_variable_set():
        return False
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False
