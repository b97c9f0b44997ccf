"""API errors: an exception that carries Ollama's status code and message text.

Handlers raise `APIError(status, message)`; the app turns it into `{"error": message}` with
that status before a stream starts, or into a final `{"error": message}` line after it has
(../shared/reference/ollama-api.md §4.1). Messages are Ollama's own (§4.2) where one exists.
"""

from __future__ import annotations


class APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> APIError:
    return APIError(400, message)


def model_not_found(name: str) -> APIError:
    """generate, chat, show, delete: single quotes."""
    return APIError(404, f"model '{name}' not found")


def model_not_found_pull(name: str) -> APIError:
    """embed, embeddings and the scheduler: the wording clients grep for."""
    return APIError(404, f'model "{name}" not found, try pulling it first')
