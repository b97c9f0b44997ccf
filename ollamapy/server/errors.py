"""API errors: an exception that carries Ollama's status code and message text.

Handlers raise `APIError(status, message)`; the app turns it into `{"error": message}` with
that status before a stream starts, or into a final `{"error": message}` line after it has
(../shared/reference/ollama-api.md §4.1). Messages are Ollama's own (§4.2) where one exists.
Every error response gets its headers from `error_headers`: a 503 (the queue bound, a
shutdown) says when to come back with `Retry-After`, which Ollama does not send.
"""

from __future__ import annotations

from collections.abc import Mapping

# seconds a client told "server busy" should wait: a queued request on a small model takes
# about this long, and the OpenAI SDK's retries honour the header
RETRY_AFTER_S = 1


class APIError(Exception):
    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error_headers(status: int, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    out = dict(headers or {})
    if status == 503:
        out.setdefault("Retry-After", str(RETRY_AFTER_S))
    return out


def bad_request(message: str) -> APIError:
    return APIError(400, message)


def model_not_found(name: str) -> APIError:
    """generate, chat, show, delete: single quotes."""
    return APIError(404, f"model '{name}' not found")


def model_not_found_pull(name: str) -> APIError:
    """embed, embeddings and the scheduler: the wording clients grep for."""
    return APIError(404, f'model "{name}" not found, try pulling it first')
