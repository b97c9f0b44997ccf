"""A decoder's embedding as llama.cpp, and so Ollama's runner, computes it: the final norm's
output, pooled (the last prompt token's without a `<arch>.pooling_type`), checked against
transformers' `last_hidden_state` on tiny random models: the engine, a GGUF through
`ollamapy.load`, and the engine thread embedding between decode steps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ollamapy
from ollamapy.contract import ModelSpec
from ollamapy.engine.pooling import decoder_embedding
from ollamapy.loading.gguf_config import UnsupportedModelError, decoder_pooling
from ollamapy.runner import Runner
from tests.engine.hf_tiny import VOCAB, tiny_hf_model
from tests.engine.test_model_vs_hf import ARCHS, ours_from_hf
from tests.loading import test_families
from tests.loading.test_tiny_gguf import write_tiny_gguf


def hf_hidden(hf, ids: list[int]) -> torch.Tensor:
    """transformers' final hidden states (after the final norm) of one text → (T, dim)."""
    with torch.no_grad():
        return hf.model(torch.tensor([ids])).last_hidden_state[0].float()


@pytest.mark.parametrize("arch", ARCHS)
def test_hidden_states_match_transformers(arch: str) -> None:
    hf = tiny_hf_model(arch)
    ours = ours_from_hf(hf)
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf.model(ids).last_hidden_state.float()  # (2, 20, dim)
    got = ours(ids, all_logits=True, hidden=True)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours(ids, hidden=True), expected[:, -1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["last", "mean", "cls"])
def test_chunked_embedding_pools_the_whole_prompt(pooling: str) -> None:
    """Chunks of num_batch through a KV cache give the states of one forward; gemma3's
    sliding window (6) is narrower than the prompt, so the cache carries it across chunks."""
    hf = tiny_hf_model("gemma3", seed=2)
    ours = ours_from_hf(hf)
    ids = torch.randint(0, VOCAB, (23,), generator=torch.Generator().manual_seed(3)).tolist()
    hidden = hf_hidden(hf, ids)
    expected = {"last": hidden[-1], "mean": hidden.mean(0), "cls": hidden[0]}[pooling]
    for num_batch in (1, 5, 512):
        got = decoder_embedding(ours, ids, pooling, num_batch)
        assert got.dtype == torch.float32 and got.shape == (hf.config.hidden_size,)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_decoder_pooling_follows_the_gguf() -> None:
    assert decoder_pooling({}) == "last"  # e.g. a Hugging Face config.json
    assert decoder_pooling({"general.architecture": "llama"}) == "last"  # a completion model
    for pooling_type, pooling in ((0, "last"), (1, "mean"), (2, "cls"), (3, "last")):
        meta = {"general.architecture": "qwen3", "qwen3.pooling_type": pooling_type}
        assert decoder_pooling(meta) == pooling
    with pytest.raises(UnsupportedModelError, match="pooling_type 4 cannot embed"):
        decoder_pooling({"general.architecture": "qwen3", "qwen3.pooling_type": 4})  # rank


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    hf = tiny_hf_model("llama", seed=6)
    path = tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf"
    write_tiny_gguf(hf, "llama", path)
    return hf, path


def test_a_gguf_decoder_embeds_through_the_public_api(tiny) -> None:
    hf, path = tiny
    m = ollamapy.load(path, device="cpu")
    ids = m.embedding_ids("hi there")
    assert ids == m.tokenize("hi there") and ids[0] == 0  # BOS, then the text
    last = hf_hidden(hf, ids)[-1]
    (raw,) = m.embed_ids([ids], normalize=False)  # /api/embeddings: as the model gives it
    torch.testing.assert_close(torch.tensor(raw), last, atol=1e-4, rtol=1e-4)
    (unit,) = m.embed("hi there")  # /api/embed: L2-normalised
    torch.testing.assert_close(torch.tensor(unit), F.normalize(last, dim=0), atol=1e-5,
                               rtol=1e-4)
    # too long: the start of the text is kept, as Ollama cuts it
    (cut,) = m.embed_ids([ids], max_tokens=4, normalize=False)
    torch.testing.assert_close(torch.tensor(cut), hf_hidden(hf, ids[:4])[-1], atol=1e-4,
                               rtol=1e-4)
    two = m.embed(["hi there", "a"])
    assert two[0] == pytest.approx(unit, abs=1e-6)
    m.checkpoint.metadata["llama.pooling_type"] = 1  # as a GGUF with mean pooling says
    (mean,) = m.embed_ids([ids], normalize=False)
    torch.testing.assert_close(torch.tensor(mean), hf_hidden(hf, ids).mean(0), atol=1e-4,
                               rtol=1e-4)


def test_the_engine_thread_embeds_one_input_per_decode_step(tiny) -> None:
    """A generation and a five-input embedding queued together: each decode step embeds one
    input, so the generation never waits for the whole batch of inputs."""
    _, path = tiny
    runner = Runner(ModelSpec(name="tiny", path=path), num_ctx=64, num_parallel=2, device="cpu")
    texts = ["hi there", "a", "b c d", "e", "fg"]
    try:
        worker = runner.worker
        steps_at_embed: list[int] = []
        embed = worker.embed
        assert embed is not None

        def spy(ids, limit, normalize):
            steps_at_embed.append(worker.batch.steps)
            return embed(ids, limit, normalize)

        worker.embed = spy

        async def both() -> tuple[list, list]:
            async def collect(events) -> list:
                return [e async for e in events]

            with worker.cond:  # the engine thread waits until both jobs are queued
                opts = runner.options({"temperature": 0, "num_predict": 8})
                generation = asyncio.create_task(
                    collect(runner.generate("hi", opts, raw=True)))
                embedding = asyncio.create_task(collect(runner.embed(texts)))
                while len(worker.waiting) < 2:
                    await asyncio.sleep(0.01)
            return await generation, await embedding

        events, (result,) = asyncio.run(both())
        done = events[-1]
        assert done.done_reason == "length" and done.eval_count == 8  # it ran all along
        assert steps_at_embed == [0, 1, 2, 3, 4]  # one input a step, none waiting for more
        expected = runner.model.embed(texts)
        assert len(result.vectors) == len(texts)
        for got, want in zip(result.vectors, expected, strict=True):
            assert got == pytest.approx(want, abs=1e-6)
        assert result.prompt_eval_count == sum(len(runner.model.embedding_ids(t))
                                               for t in texts)
    finally:
        runner.close()


family = test_families.family  # every family in the table, converted by llama.cpp's converter


def test_every_family_embeds_its_final_hidden_state(family) -> None:
    """Soft caps, logit scaling and routing are the head's or the layers': what a family's
    GGUF embeds is transformers' last_hidden_state of the last token."""
    _, built = family
    m = ollamapy.load(built.gguf, device="cpu")
    (raw,) = m.embed_ids([built.ids], normalize=False, num_batch=5)
    torch.testing.assert_close(torch.tensor(raw), hf_hidden(built.hf, built.ids)[-1],
                               atol=1e-4, rtol=1e-4)
