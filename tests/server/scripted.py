"""An app whose runner plays a script: the HTTP layers' unit tests, with no model.

`scripted_app(tmp_path, {name: template})` makes a store with a tiny GGUF imported under
each name (with its Go TEMPLATE, if any) and serves it through the real app and scheduler;
every load gets a `ScriptedRunner`, whose chat streams `ScriptedRunner.script` (runner
events, or an exception to raise there) and records its arguments in `ScriptedRunner.calls`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from ollamapy.contract import ModelSpec
from ollamapy.engine.options import Options, parse_options
from ollamapy.scheduler import Scheduler
from ollamapy.server.app import create_app
from ollamapy.settings import Settings
from ollamapy.store import Store, create_model
from tests.store.conftest import upload, write_gguf


class ScriptedRunner:
    script: list[Any] = []
    calls: list[dict[str, Any]] = []

    def __init__(self, spec: ModelSpec, num_ctx: int) -> None:
        self.spec, self.num_ctx = spec, min(num_ctx, 2048)
        self.is_encoder, self.context_length, self.size, self.on_gpu = False, 2048, 1000, False
        self.alive = True

    def options(self, request: Any) -> Options:
        return parse_options(request, Options(num_ctx=self.num_ctx))

    def chat(self, messages: Any, options: Options, **kwargs: Any) -> AsyncIterator[Any]:
        ScriptedRunner.calls.append({"messages": messages, "options": options, **kwargs})
        return self._play()

    async def _play(self) -> AsyncIterator[Any]:
        for step in ScriptedRunner.script:
            if isinstance(step, BaseException):
                raise step
            yield step

    def close(self) -> None:
        pass


@contextmanager
def scripted_app(tmp_path: Path, models: Mapping[str, str | None], script: list[Any]
                 ) -> Iterator[TestClient]:
    ScriptedRunner.script, ScriptedRunner.calls = script, []
    settings = Settings.from_env({"OLLAMA_MODELS": str(tmp_path / "models")})
    store = Store(settings.models)
    digest = upload(store, write_gguf(tmp_path / "tiny.gguf"))
    for name, template in models.items():
        list(create_model(store, name, files={"tiny.gguf": digest},
                          **({"template": template} if template is not None else {})))
    app = create_app(settings, Scheduler(settings, make_runner=ScriptedRunner))
    with TestClient(app) as client:
        yield client
