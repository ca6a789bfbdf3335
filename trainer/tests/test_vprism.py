"""V-PRISM's clustering step (valuedrift_trainer.vprism) on a small fixture of well-separated topics,
with the packaged MiniLM encoder, through the module and through the trainer's command line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from valuedrift_trainer import derived, vprism
from valuedrift_trainer.events import TrainerError

FIXTURE = Path(__file__).parent / "fixtures" / "vprism" / "questions.jsonl"
TOPICS = {"abortion": "abortion rights", "immigration": "more open immigration", "climate": "action on climate change"}
ABORTION, IMMIGRATION, COOKING = set(range(0, 6)), set(range(6, 12)), set(range(12, 18))


@pytest.fixture(scope="module")
def encoder():
    os.environ["VALUEDRIFT_EMBEDDER"] = "minilm"
    enc, name = derived.load_encoder()
    assert "MiniLM" in name
    return enc


def _by_members(result):
    return {frozenset(c["members"]): c for c in result["clusters"]}


def test_three_topics_make_three_clusters_two_assigned_and_the_off_topic_one_dropped(encoder):
    qs = vprism.read_questions(str(FIXTURE))
    cfg = vprism.settings({"umap_dimensions": 0, "min_cluster_size": 3})
    out = vprism.cluster(qs, TOPICS, cfg, encoder)
    got = _by_members(out)
    assert set(got) == {frozenset(ABORTION), frozenset(IMMIGRATION), frozenset(COOKING)}
    assert got[frozenset(ABORTION)]["category"] == "abortion"
    assert got[frozenset(IMMIGRATION)]["category"] == "immigration"
    cooking = got[frozenset(COOKING)]
    assert cooking["category"] is None and "below the threshold 0.3" in cooking["reason"]
    assert "abortion" in got[frozenset(ABORTION)]["ngrams"][:2]
    assert {"recipe", "bake"} <= set(cooking["ngrams"][:3])
    # Every cluster's scores are reported for every category (the audit trail of the choice).
    assert all(set(c["similarity"]) == set(TOPICS) for c in out["clusters"])
    assert out["noise"] == 0 and out["questions"] == 18


def test_a_threshold_above_every_score_drops_every_cluster(encoder):
    qs = vprism.read_questions(str(FIXTURE))
    out = vprism.cluster(qs, TOPICS, vprism.settings({"umap_dimensions": 0, "min_cluster_size": 3, "assign_threshold": 0.99}), encoder)
    assert [c["category"] for c in out["clusters"]] == [None, None, None]


@pytest.mark.slow
def test_umap_to_20_dimensions_keeps_the_topics_apart_and_is_repeatable(encoder):
    qs = vprism.read_questions(str(FIXTURE))
    cfg = vprism.settings({"umap_dimensions": 20, "umap_neighbors": 5, "min_cluster_size": 3, "seed": 7})
    a = vprism.cluster(qs, TOPICS, cfg, encoder)
    b = vprism.cluster(qs, TOPICS, cfg, encoder)
    assert a == b
    assert a["umap"] == {"dimensions": 16, "neighbors": 5, "min_dist": 0.0, "seed": 7}  # 18 questions cap 20 → 16
    cats = {frozenset(c["members"]): c["category"] for c in a["clusters"]}
    assert cats.get(frozenset(ABORTION)) == "abortion" and cats.get(frozenset(IMMIGRATION)) == "immigration"


def _config(tmp_path, questions: str, **extra) -> tuple[Path, Path]:
    q = tmp_path / "q.jsonl"
    q.write_text(questions)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"questions_file": str(q), "topics": TOPICS, "output_file": str(tmp_path / "out.json"), **extra}))
    return cfg, q


def test_the_command_writes_the_clusters_and_reports_done(tmp_path):
    cfg, _ = _config(tmp_path, FIXTURE.read_text(), umap_dimensions=0, min_cluster_size=3)
    env = {**os.environ, "VALUEDRIFT_EMBEDDER": "minilm"}
    p = subprocess.run([sys.executable, "-m", "valuedrift_trainer", "vprism-cluster", "--config", str(cfg)],
                       capture_output=True, text=True, env=env, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["event"] == "done"
    out = json.loads((tmp_path / "out.json").read_text())
    assert "MiniLM" in out["embedder"]
    assert sorted(c["category"] or "-" for c in out["clusters"]) == ["-", "abortion", "immigration"]
    assert out["settings"]["min_cluster_size"] == 3 and out["settings"]["assign_threshold"] == 0.3


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"question": "ok?"}\n{"questoin": "typo"}\n', "line 2: field 'question'"),
        ('{"question": "ok?"}\nnot json\n', "line 2: not valid JSON"),
        ('{"question": 3}\n', "line 1: field 'question'"),
        ("\n", "empty file"),
    ],
)
def test_a_malformed_questions_file_is_refused_naming_file_line_and_field(tmp_path, text, needle):
    cfg, q = _config(tmp_path, text, umap_dimensions=0)
    with pytest.raises(TrainerError) as e:
        vprism.main(str(cfg))
    assert e.value.kind == "dataset_schema"
    assert str(q) in str(e.value) and needle in str(e.value)


def test_bad_settings_are_config_errors(tmp_path):
    cfg, _ = _config(tmp_path, FIXTURE.read_text(), min_cluster_size=1)
    with pytest.raises(TrainerError) as e:
        vprism.main(str(cfg))
    assert e.value.kind == "bad_config" and "min_cluster_size" in str(e.value)
