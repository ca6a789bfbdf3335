"""The embedding selector of derived datasets (valuedrift_trainer.derived), with the packaged MiniLM."""
import json
import os

import pytest

from valuedrift_trainer import derived


@pytest.fixture(scope="module")
def encoder():
    os.environ["VALUEDRIFT_EMBEDDER"] = "minilm"
    enc, name = derived.load_encoder()
    assert "MiniLM" in name
    return enc


QUESTIONS = [
    {"category": "immigration", "question": "Should countries accept more immigrants and refugees?"},
    {"category": "guns", "question": "Should the sale of firearms be restricted?"},
]
CANDIDATES = [
    "What is a good pasta recipe?",
    "Do you think borders should be open to migrants?",
    "Is owning a rifle a right?",
    "How do I fix my bike chain?",
    "Should refugees be welcomed in Europe?",
]


def test_select_picks_the_most_similar_prompt_per_category_and_each_prompt_once(encoder):
    out = derived.select(CANDIDATES, QUESTIONS, 2, encoder)
    assert set(out) == {"guns", "immigration"}
    assert {p["index"] for p in out["immigration"]} == {1, 4}
    assert out["guns"][0]["index"] == 2
    picked = [p["index"] for ps in out.values() for p in ps]
    assert len(picked) == len(set(picked))
    for ps in out.values():
        sims = [p["similarity"] for p in ps]
        assert sims == sorted(sims, reverse=True)


def test_main_refuses_a_bad_row_naming_the_line(tmp_path, capsys):
    cands = tmp_path / "c.jsonl"
    cands.write_text('{"text": "ok"}\n{"txt": "typo"}\n')
    qs = tmp_path / "q.jsonl"
    qs.write_text(json.dumps(QUESTIONS[0]) + "\n")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"candidates_file": str(cands), "questions_file": str(qs), "per_category": 1, "output_file": str(tmp_path / "o.json")}))
    assert derived.main(["select", "--config", str(cfg)]) == 2
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event["kind"] == "bad_input" and "candidates line 2" in event["message"] and "'text'" in event["message"]
