"""hftrain.check_devices: one process per GPU on this node, also when a multi-node group's WORLD_SIZE
spans every node (torch.cuda is patched: these machines have no GPU)."""
from __future__ import annotations

import pytest

from test_config import parse
from valuedrift_trainer import hftrain
from valuedrift_trainer.events import TrainerError


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_a_two_node_group_passes_with_two_processes_on_this_node(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert hftrain.check_devices(parse("sft", num_gpus=2, bf16=True)) is True


def test_one_node_without_local_world_size_falls_back_to_world_size(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert hftrain.check_devices(parse("sft", num_gpus=2, bf16=False)) is False
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(TrainerError, match="LOCAL_WORLD_SIZE is 4"):
        hftrain.check_devices(parse("sft", num_gpus=2))


def test_too_few_processes_on_this_node_is_refused(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    with pytest.raises(TrainerError, match="needs one process per GPU on this node"):
        hftrain.check_devices(parse("sft", num_gpus=2))


def test_more_gpus_than_the_node_has_is_refused(two_gpus: None) -> None:
    with pytest.raises(TrainerError, match="num_gpus: 4 requested but 2 CUDA device"):
        hftrain.check_devices(parse("sft", num_gpus=4))
