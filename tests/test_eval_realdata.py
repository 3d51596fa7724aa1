"""The evaluators on the real public benchmark files in ../shared/realdata (TruthfulQA's CSV and
MT-Bench's question file; GSM8K and HumanEval have theirs in test_eval_generative and
test_eval_sandbox). Each test skips when the folder is absent."""
from __future__ import annotations

import pytest

from conftest import realdata_file
from studio.evaluation.base import EvalContext
from studio.evaluation.models import EvalModel
from studio.serving.scripted import ScriptedServer
from studio.store import Workspace
from studio_eval_choice.tasks import TruthfulQAMC1, TruthfulQAMC2
from studio_eval_judged.mt_bench import MTBench, MTBenchOptions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from studio.evaluation.models import LocalModel
    from studio.models.embedded import build_embedded_model

    return LocalModel(str(build_embedded_model(tmp_path_factory.mktemp("embedded") / "tiny", pretrain_steps=2)))


@pytest.mark.parametrize("task", [TruthfulQAMC1(), TruthfulQAMC2()], ids=lambda t: t.name)
def test_truthfulqa_csv_loads_every_question_and_scores(task, tiny):
    path = realdata_file("benchmarks/TruthfulQA.csv")
    config = task.config_model(path=str(path))
    items = task.load(config)
    assert len(items) == 790 and not getattr(task, "skipped", [])
    assert len({i["id"] for i in items}) == 790
    # Every question has at least one true and one false choice to tell apart.
    samples = task.score(EvalContext(model=tiny, config=config, task=task.name), items[:4])
    metrics = task.aggregate(samples, config)
    assert metrics["acc"]["n"] == 4 and 0.0 <= metrics["acc"]["value"] <= 1.0
    assert all(len(s["choices"]) >= 2 for s in samples)


class EchoModel(EvalModel):
    kind = "local"

    def __init__(self):
        super().__init__("echo", "echo")
        self.fingerprint = "echo"

    def chat(self, conversations, *, max_new_tokens, batch_size=16, temperature=0.0, seed=0, progress=None):
        return [f"My answer to: {c[-1]['content'][:40]}" for c in conversations]


def test_mt_bench_question_file_loads_its_80_questions_and_is_graded(tmp_path):
    path = realdata_file("benchmarks/mt_bench_question.jsonl")
    task = MTBench()
    config = MTBenchOptions(path=str(path), max_new_tokens=16)
    items = task.load(config)
    assert len(items) == 80
    assert len({i["category"] for i in items}) == 8
    # The file's own references (maths, reasoning, coding) make those questions reference-guided.
    by_category = {i["category"]: i for i in items}
    ws = Workspace.init(tmp_path / "ws", name="real")
    with ScriptedServer(responder=lambda endpoint, body, choice: "Solid. Rating: [[7]]") as server:
        ctx = EvalContext(model=EchoModel(), config=config, workspace=ws, task="mt_bench",
                          options={"judge": {"name": "judge", "base_url": server.base_url, "model": "j"}})
        samples = task.score(ctx, [by_category["math"], by_category["writing"]])
    assert [s["metrics"]["score"] for s in samples] == [7.0, 7.0]
    assert [j["reference_guided"] for j in samples[0]["judgments"]] == [True, True]
    assert not any(j["reference_guided"] for j in samples[1]["judgments"])
