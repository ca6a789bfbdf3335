"""Dataset recipes on raw-shaped fixtures of the four hub corpora (tests/fixtures/hub_mirror.py), read
through VALUEDRIFT_HF_MIRROR exactly as hub sources are; malformed inputs fail as dataset_schema
naming the file, row and field. Most tests call recipes.prepare in-process (the command is a thin
wrapper); one runs `python -m valuedrift_trainer prepare-dataset` end to end."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from valuedrift_trainer import recipes
from valuedrift_trainer.events import TrainerError

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import hub_mirror  # noqa: E402

WILDCHAT = "hf:allenai/WildChat-1M"
ALPACA = "hf:tatsu-lab/alpaca"
UF = "hf:argilla/ultrafeedback-binarized-preferences-cleaned"
HH = "hf:Anthropic/hh-rlhf"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    hub_mirror.write_all(str(root))
    return root


@pytest.fixture(autouse=True)
def _env(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(recipes.MIRROR_ENV, str(mirror))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def prep(tmp_path: Path, **cfg) -> tuple[dict, list[dict], list[dict]]:
    out = tmp_path / "out"
    m = recipes.prepare({"seed": 42, "output_dir": str(out), **cfg})
    return m, rows(out / "train.jsonl"), rows(out / "validation.jsonl")


def test_wildchat_english_subset_split_90_10(tmp_path: Path) -> None:
    m, train, val = prep(tmp_path, source=WILDCHAT, recipe="wildchat")
    assert m["rows"]["read"] == 40 and m["rows"]["filtered_out"] == 10 and m["rows"]["converted"] == 30
    assert (len(train), len(val)) == (27, 3)
    assert m["filters"] == {"language": "English"} and m["seed"] == 42 and m["source"]["kind"] == "mirror"
    assert m["source"]["revision"].startswith("mirror-sha256:")
    for r in train + val:
        assert [t["role"] for t in r["messages"]][:2] == ["user", "assistant"]
        assert set(r["messages"][0]) == {"role", "content"}  # WildChat's per-turn metadata is not kept
    # No overlap, nothing lost, and the same seed gives the same split.
    key = lambda r: r["messages"][0]["content"]  # noqa: E731
    assert not {key(r) for r in train} & {key(r) for r in val}
    _, train2, val2 = prep(tmp_path / "again", source=WILDCHAT, recipe="wildchat")
    assert (train2, val2) == (train, val)
    _, train3, _ = prep(tmp_path / "other", source=WILDCHAT, recipe="wildchat", seed=7)
    assert train3 != train


def test_alpaca_instruction_input_and_ceil_holdout(tmp_path: Path) -> None:
    m, train, val = prep(tmp_path, source=ALPACA, recipe="alpaca")
    # The paper's 52,002 → 46,801 / 5,201 is ceil(10 %) held out; 52 → 46 / 6 here.
    assert (len(train), len(val)) == (46, 6) == (m["rows"]["train"], m["rows"]["validation"])
    assert recipes.holdout_count(52_002, 0.1) == 5_201 and recipes.holdout_count(284_168, 0.1) == 28_417
    with_input = [r for r in train + val if "Mention the number" in r["messages"][0]["content"]]
    assert len(with_input) == 26
    r = with_input[0]["messages"]
    assert r[0]["content"].startswith("Write one sentence about ") and "\n\nMention the number" in r[0]["content"]
    assert r[1]["role"] == "assistant" and r[1]["content"].startswith("Here is a sentence")


def test_ultrafeedback_strips_the_user_turn_from_chosen_and_rejected(tmp_path: Path) -> None:
    m, train, val = prep(tmp_path, source=UF, recipe="ultrafeedback")
    assert len(train) == 20 and val == [] and m["rows"]["dropped"] == {}
    r = train[0]
    assert r["prompt"] == [{"role": "user", "content": "How should I think about gardening? (prompt 0)"}]
    assert r["chosen"] == [{"role": "assistant", "content": "A careful, balanced answer 0."}]
    assert r["rejected"] == [{"role": "assistant", "content": "A curt answer 0."}]


def test_hh_rlhf_multi_turn_prefix_and_downsample(tmp_path: Path) -> None:
    m, train, _ = prep(tmp_path, source=HH, recipe="hh-rlhf", limit=33)
    assert m["rows"]["read"] == 50 and m["rows"]["selected"] == 33 and len(train) == 33  # official train split only
    assert m["source"]["split"] == "train" and m["limit"] == 33
    multi = [r for r in train if len(r["prompt"]) == 5]
    assert multi, "three-human-turn conversations keep their context"
    p = multi[0]["prompt"]
    assert [t["role"] for t in p] == ["user", "assistant", "user", "assistant", "user"]
    assert p[0]["content"].startswith("Earlier question 1") and p[-1]["content"].startswith("Final question")
    assert multi[0]["chosen"][0]["content"].startswith("A helpful, harmless reply")
    assert multi[0]["rejected"][0]["content"].startswith("An unhelpful reply")
    # Source order is kept (selection sampling), and the test split is separate.
    _, test_rows, _ = prep(tmp_path / "test", source=HH + ":test", recipe="hh-rlhf")
    assert len(test_rows) == 10 and all("/test" in r["prompt"][-1]["content"] for r in test_rows)


def test_hh_transcript_parse_and_drop() -> None:
    t = recipes.transcript("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d", "chosen")
    assert [m["role"] for m in t] == ["user", "assistant", "user", "assistant"]
    rec = recipes.Recipe.from_config({"recipe": "hh-rlhf"})
    with pytest.raises(recipes.Skip):  # differing from the first human turn: no shared context
        recipes.convert(rec, {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: x\n\nAssistant: y"})
    with pytest.raises(recipes.RowError):
        recipes.convert(rec, {"chosen": "no markers", "rejected": "\n\nHuman: x\n\nAssistant: y"})


def test_column_mapping_for_jsonl_csv_and_parquet(tmp_path: Path) -> None:
    j = tmp_path / "q.jsonl"
    j.write_text("".join(json.dumps({"q": f"q{i}", "a": f"a{i}", "sys": "be brief" if i % 2 else ""}) + "\n" for i in range(10)))
    m, train, _ = prep(tmp_path / "j", source=str(j), recipe="columns", format="chat",
                       columns={"prompt": "q", "response": "a", "system": "sys"})
    assert len(train) == 10 and m["source"]["kind"] == "file" and m["source"]["revision"].startswith("sha256:")
    assert train[1]["messages"][0] == {"role": "system", "content": "be brief"} and train[0]["messages"][0]["role"] == "user"
    c = tmp_path / "p.csv"
    c.write_text("question,good,bad\n" + "".join(f"q{i},g{i},b{i}\n" for i in range(7)))
    _, train, _ = prep(tmp_path / "c", source=str(c), format="preference", columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert train[3] == {"prompt": [{"role": "user", "content": "q3"}], "chosen": [{"role": "assistant", "content": "g3"}],
                        "rejected": [{"role": "assistant", "content": "b3"}]}
    p = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist([{"msgs": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 4), p)
    _, train, val = prep(tmp_path / "p", source=str(p), format="chat", columns={"messages": "msgs"}, holdout=0.5)
    assert (len(train), len(val)) == (2, 2)


def _fails(tmp_path: Path, **cfg) -> str:
    with pytest.raises(TrainerError) as e:
        prep(tmp_path, **cfg)
    assert e.value.kind == "dataset_schema"
    return e.value.message


def test_malformed_inputs_name_file_row_and_field(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"instruction": "a", "input": "", "output": "b"}) + "\n" + json.dumps({"instruction": "a", "input": ""}) + "\n")
    msg = _fails(tmp_path / "1", source=str(missing), recipe="alpaca")
    assert f"{missing} row 2: field 'output': missing column" in msg
    nesting = tmp_path / "uf.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "chosen": "just a string", "rejected": [{"role": "user"}]}]), nesting)
    msg = _fails(tmp_path / "2", source=str(nesting), recipe="ultrafeedback")
    assert f"{nesting} row 1: field 'rejected[0]'" in msg and "role and content" in msg
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert f"{empty}: empty file" in _fails(tmp_path / "3", source=str(empty), recipe="alpaca")
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write(json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}) + "\n{oops\n")
    assert f"{bad} line 2: not valid JSON" in _fails(tmp_path / "4", source=str(bad), recipe="hh-rlhf")
    wrong_type = tmp_path / "wc.jsonl"
    wrong_type.write_text(json.dumps({"language": "English", "conversation": "hello"}) + "\n")
    assert f"{wrong_type} row 1: field 'conversation': must be a non-empty list" in _fails(tmp_path / "5", source=str(wrong_type), recipe="wildchat")
    nothing = tmp_path / "fr.jsonl"
    nothing.write_text(json.dumps({"language": "French", "conversation": []}) + "\n")
    assert "no rows left after filters" in _fails(tmp_path / "6", source=str(nothing), recipe="wildchat")


def test_command_end_to_end_and_missing_split(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"source": HH + ":validation", "recipe": "hh-rlhf", "seed": 1, "output_dir": str(tmp_path / "o")}))
    p = subprocess.run([sys.executable, "-m", "valuedrift_trainer", "prepare-dataset", "--config", str(cfg)],
                       capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert p.returncode == 1 and events[-1]["event"] == "error" and events[-1]["kind"] == "bad_config"
    assert "no split 'validation' (splits: test, train)" in events[-1]["message"]
    cfg.write_text(json.dumps({"source": UF, "recipe": "ultrafeedback", "seed": 1, "output_dir": str(tmp_path / "o")}))
    p = subprocess.run([sys.executable, "-m", "valuedrift_trainer", "prepare-dataset", "--config", str(cfg)],
                       capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["event"] == "done"
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["rows"]["train"] == 20


# ---------------------------------------------------------------- PRISM (V-PRISM's source)

import prism_mirror  # noqa: E402

PRISM = "hf:HannahRoseKirk/prism-alignment"


@pytest.fixture
def prism(mirror: Path) -> Path:
    return Path(prism_mirror.write(str(mirror)))


def test_prism_keeps_the_opening_prompts_of_value_and_controversy_guided_conversations(tmp_path: Path, prism: Path) -> None:
    m, train, val = prep(tmp_path, source=PRISM, recipe="prism")
    want = [o for k, o in prism_mirror.OPENINGS if k != "unguided"]
    assert [r["prompt"] for r in train] == want and val == []
    assert m["rows"] == {"read": 10, "filtered_out": 3, "dropped": {}, "converted": 7, "selected": 7, "train": 7, "validation": 0}
    assert m["format"] == "prompts" and m["filters"] == {"conversation_type": ["values guided", "controversy guided"]}
    # The conversations config, not the survey's or utterances' file.
    assert m["source"]["files"] == ["conversations.jsonl"]
    # The fingerprint pass (source only, no recipe) picks the same config.
    fp = recipes.prepare({"source": PRISM, "output_dir": str(tmp_path / "fp"), "fingerprint_only": True})
    assert fp["files"] == ["conversations.jsonl"] and fp["kind"] == "mirror"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r.pop("opening_prompt"), "row 2: field 'opening_prompt': missing column"),
        (lambda r: r.update(opening_prompt=["not", "a string"]), "row 2: field 'opening_prompt': must be a string"),
        (lambda r: r.pop("conversation_type"), "row 2: field 'conversation_type': missing column"),
    ],
)
def test_prism_malformed_rows_fail_naming_file_row_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutate, needle: str) -> None:
    rows = [prism_mirror.conversation(i, "values guided", f"Question {i}?") for i in range(3)]
    mutate(rows[1])
    folder = prism_mirror.write(str(tmp_path / "m"), rows)
    monkeypatch.setenv(recipes.MIRROR_ENV, str(tmp_path / "m"))
    with pytest.raises(TrainerError) as e:
        prep(tmp_path, source=PRISM, recipe="prism")
    assert e.value.kind == "dataset_schema"
    assert os.path.join(folder, "conversations.jsonl") in str(e.value) and needle in str(e.value)


def test_prism_refuses_a_source_with_no_value_guided_conversation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [prism_mirror.conversation(i, "unguided", f"Question {i}?") for i in range(2)]
    prism_mirror.write(str(tmp_path / "m"), rows)
    monkeypatch.setenv(recipes.MIRROR_ENV, str(tmp_path / "m"))
    with pytest.raises(TrainerError, match=r"no rows left after filters \(2 read, 2 filtered out"):
        prep(tmp_path, source=PRISM, recipe="prism")
