"""A model's template is its publisher's code (issue 14, item 6): a chat template in a GGUF or
a Modelfile TEMPLATE that would loop for hours is legal in both sandboxes. Through the live
server it ends its own request with a 400 naming the template, after RENDER_SECONDS of
rendering, while a plain request beside it is answered; the server serves on.

No test here asserts how long anything took (the machine may be busy): the hostile request
ending at all, with its error, is the property; the client's timeout is only a hang guard."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from ollamapy.prompt import RENDER_SECONDS
from tests.e2e.conftest import Server, import_model
from tests.engine.hf_tiny import tiny_hf_model
from tests.loading.test_tiny_gguf import write_tiny_gguf

SPIN_JINJA = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
SPIN_GO = "{{ range $i := 99999 }}{{ range $j := 99999 }}{{ end }}{{ end }}{{ .Prompt }}"
HANG_GUARD = 300


def generate(url: str, model: str, results: dict[str, httpx.Response]) -> None:
    results[model] = httpx.post(f"{url}/api/generate", timeout=HANG_GUARD, json={
        "model": model, "prompt": "Hello", "stream": False,
        "options": {"temperature": 0, "num_predict": 4}})


def beside_plain_traffic(server: Server, hostile: str) -> httpx.Response:
    """The hostile model's request and a plain one to smollm2 at the same time; → the
    hostile one's response, after checking the plain one's."""
    results: dict[str, httpx.Response] = {}
    threads = [threading.Thread(target=generate, args=(server.url, m, results))
               for m in (hostile, "smollm2:135m")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_GUARD + 10)
    plain = results["smollm2:135m"]
    assert plain.status_code == 200 and plain.json()["eval_count"] >= 1
    return results[hostile]


def refused_beside_plain_traffic(server: Server, hostile: str, which: str) -> None:
    """The hostile model's request is a 400 naming its template while a plain one is
    answered; then the hostile model goes and the server still answers."""
    try:
        r = beside_plain_traffic(server, hostile)
        assert r.status_code == 400
        assert r.json()["error"] == (f"{which} did not finish rendering the prompt within "
                                     f"{RENDER_SECONDS:g} s")
    finally:
        httpx.request("DELETE", f"{server.url}/api/delete", json={"model": hostile})
    again = httpx.post(f"{server.url}/api/generate", timeout=HANG_GUARD, json={
        "model": "smollm2:135m", "prompt": "Hi", "stream": False, "options": {"num_predict": 2}})
    assert again.status_code == 200


def test_a_spinning_gguf_chat_template_ends_its_request(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "spin.gguf"
    write_tiny_gguf(tiny_hf_model("llama", seed=2), "llama", path, chat_template=SPIN_JINJA)
    import_model(server, "spin-jinja", path, tmp_path)
    refused_beside_plain_traffic(server, "spin-jinja", "chat template")


def test_a_spinning_modelfile_template_ends_its_request(server: Server) -> None:
    r = httpx.post(f"{server.url}/api/create", timeout=HANG_GUARD,
                   json={"model": "spin-go", "from": "smollm2:135m", "template": SPIN_GO,
                         "stream": False})
    assert r.status_code == 200, r.text
    refused_beside_plain_traffic(server, "spin-go", "template")
