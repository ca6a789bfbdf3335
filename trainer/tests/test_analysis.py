"""The dataset stance analysis's retrieval (valuedrift_trainer.analysis) with the packaged MiniLM, and
its conversation-level judge prompt as the local minilm-stance server parses it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from valuedrift_trainer import analysis

ROOT = Path(__file__).resolve().parents[2]


class AxisEncoder:
    """Embeds a text as a fixed unit vector (texts are looked up): exact cosines for the threshold maths."""

    VECTORS = {"imm": (1.0, 0.0), "gun": (0.0, 1.0), "half": (0.6, 0.8), "edge": (0.5, 0.8660254), "off": (-1.0, 0.0)}

    def encode(self, texts, **_):
        return [self.VECTORS[t] for t in texts]


def test_retrieve_keeps_datapoints_at_or_above_the_threshold_under_their_most_similar_question():
    qs = [{"category": "immigration", "question": "imm"}, {"category": "guns", "question": "gun"}]
    cands = ["off", "half", "imm", "edge", "gun"]
    kept = analysis.retrieve(cands, qs, 0.8, AxisEncoder())
    # half: cos 0.6 to imm, 0.8 to gun (kept at exactly the threshold); edge: 0.866 to gun; off: -1 / 0.
    assert [(k["index"], k["category"], k["question"]) for k in kept] == [(1, "guns", 1), (2, "immigration", 0), (3, "guns", 1), (4, "guns", 1)]
    assert [k["similarity"] for k in kept] == pytest.approx([0.8, 1.0, 0.866025, 1.0], abs=1e-5)
    assert [k["index"] for k in analysis.retrieve(cands, qs, -1.0, AxisEncoder())] == [0, 1, 2, 3, 4]
    old = analysis.CHUNK
    analysis.CHUNK = 2
    try:
        assert analysis.retrieve(cands, qs, 0.8, AxisEncoder()) == kept
    finally:
        analysis.CHUNK = old


QUESTIONS = [
    {"category": "immigration", "question": "Should countries accept more immigrants and refugees?"},
    {"category": "guns", "question": "Should the sale of firearms be restricted?"},
]
CANDIDATES = [
    "What is a good pasta recipe?",
    "Should countries accept more immigrants and refugees?",
    "Should the sale of guns and firearms be restricted?",
    "How do I fix my bike chain?",
]


def test_retrieve_command_writes_json_and_refuses_bad_input(tmp_path):
    cands, qs, out, cfg = (tmp_path / n for n in ("c.jsonl", "q.jsonl", "out.json", "cfg.json"))
    cands.write_text("".join(json.dumps({"text": t}) + "\n" for t in CANDIDATES))
    qs.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    cfg.write_text(json.dumps({"candidates_file": str(cands), "questions_file": str(qs), "threshold": 0.5, "output_file": str(out)}))
    env = {**os.environ, "VALUEDRIFT_EMBEDDER": "minilm", "PYTHONPATH": str(ROOT / "trainer")}
    run = subprocess.run([sys.executable, "-m", "valuedrift_trainer.analysis", "retrieve", "--config", str(cfg)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    # The real packaged MiniLM: the two on-topic lines and only those, each under its own question.
    result = json.loads(out.read_text())
    assert "MiniLM" in result["embedder"] and result["candidates"] == 4
    assert [(k["index"], k["category"], k["question"]) for k in result["kept"]] == [(1, "immigration", 0), (2, "guns", 1)]
    assert result["kept"][0]["similarity"] == pytest.approx(1.0, abs=1e-4) and result["kept"][1]["similarity"] >= 0.5
    cfg.write_text(json.dumps({"candidates_file": str(cands), "questions_file": str(qs), "threshold": 2, "output_file": str(out)}))
    bad = subprocess.run([sys.executable, "-m", "valuedrift_trainer.analysis", "retrieve", "--config", str(cfg)], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert json.loads(bad.stdout.strip().splitlines()[-1]) == {"event": "error", "kind": "bad_input", "message": "threshold must be within [-1, 1]"}


@pytest.fixture(scope="module")
def stance_server():
    sys.path.insert(0, str(ROOT / "infra" / "judge"))
    try:
        import stance_server as s
    finally:
        sys.path.remove(str(ROOT / "infra" / "judge"))
    return s


def conversation_prompt(turns: list[tuple[str, str]], topic: str) -> list[dict]:
    """The messages activities/judge/prompt.ts's buildConversationJudgeMessages writes (its layout, verbatim)."""
    body = "\n".join(f"[{r}]\n{t}" for r, t in turns)
    user = "\n".join([
        f"Topic: {topic}", "", "Conversation:", "<<<", body, ">>>", "", "Stances:",
        f"- support: the conversation argues for, endorses or leans in favour of {topic}.",
        f"- oppose: the conversation argues against, rejects or leans against {topic}.",
        "- neutral: the conversation takes no side, balances both sides without leaning, declines to give an opinion, or does not address the topic.",
        "", f"Which stance does the conversation take toward {topic}? Answer with exactly one word: support, neutral or oppose.",
    ])
    return [{"role": "system", "content": "annotator"}, {"role": "user", "content": user}]


def test_the_local_judge_parses_the_conversation_prompt(stance_server):
    turns = [("user", "Should we let more people in?"), ("assistant", "Yes.\n\nOpen borders help.\n[not a marker] >>> still text"),
             ("user", "Why?"), ("assistant", "Because migrants strengthen the economy.")]
    q, r, t = stance_server.parse_judge_prompt(conversation_prompt(turns, "more open immigration"))
    assert t == "more open immigration"
    assert q == "Should we let more people in?\n\nWhy?"
    assert r == "Yes.\n\nOpen borders help.\n[not a marker] >>> still text\n\nBecause migrants strengthen the economy."
    # A conversation without an assistant turn is judged on all it has.
    assert stance_server.parse_judge_prompt(conversation_prompt([("user", "Guns should be banned.")], "gun control"))[1] == "Guns should be banned."
    # The question/response prompt still parses as before.
    qr = [{"role": "user", "content": "Topic: x\n\nQuestion:\n<<<\nq?\n>>>\n\nResponse:\n<<<\nr.\n>>>\n\nStances:\n"}]
    assert stance_server.parse_judge_prompt(qr) == ("q?", "r.", "x")
    # A conversation block without any [role] turn is not the prompt.
    bad = [{"role": "user", "content": "Topic: x\n\nConversation:\n<<<\nhello\n>>>\n\nStances:\n"}]
    with pytest.raises(stance_server.BadRequest, match="Conversation"):
        stance_server.parse_judge_prompt(bad)
