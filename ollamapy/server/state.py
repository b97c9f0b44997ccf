"""What the handlers share: settings, the model store, the scheduler, and name resolution.

`resolve` turns a request's model name into the `ModelSpec` a runner loads (the GGUF blob, or
a safetensors model's blobs laid out again as a folder of links), with the layers that shape
its prompts. Model descriptions (/api/show, capabilities) come from `describe`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ollamapy.contract import ModelSpec
from ollamapy.scheduler import Scheduler
from ollamapy.server.describe import model_facts
from ollamapy.settings import Settings
from ollamapy.store import InvalidNameError, Model, ModelNotFoundError, Name, Store, StoreError


class State:
    def __init__(self, settings: Settings, store: Store, scheduler: Scheduler) -> None:
        self.settings = settings
        self.store = store
        self.scheduler = scheduler
        self._folders: Path | None = None  # links to safetensors blobs, one folder a model

    def find_model(self, raw: str) -> Model | None:
        """The stored model a request names, or None (an invalid name names nothing)."""
        try:
            return self.store.model(raw)
        except (InvalidNameError, ModelNotFoundError):
            return None

    def resolve(self, raw: str) -> ModelSpec | None:
        model = self.find_model(raw)
        if model is None:
            return None
        if model.model_path is not None:
            path = model.model_path
        elif model.files:
            path = model.link_folder(self._folder_root() / model.digest)
        else:
            raise StoreError(f"{model.short_name} has no weights layer", status=500)
        return ModelSpec(name=model.short_name, path=path, template=model.template,
                         system=model.system, params=dict(model.params),
                         messages=tuple(model.messages), digest=model.digest,
                         capabilities=model_facts(model).capabilities)

    @staticmethod
    def full_name(raw: str) -> str:
        """registry.ollama.ai/library/x:latest, as Ollama's capability errors spell it."""
        try:
            return str(Name.parse(raw))
        except InvalidNameError:
            return raw

    def _folder_root(self) -> Path:
        if self._folders is None:
            self._folders = Path(tempfile.mkdtemp(prefix="ollamapy-models-"))
        return self._folders

    def close(self) -> None:
        self.scheduler.shutdown()
        if self._folders is not None:
            shutil.rmtree(self._folders, ignore_errors=True)
