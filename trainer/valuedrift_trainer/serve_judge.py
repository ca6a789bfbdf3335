"""An open-weights stance judge served by vLLM's OpenAI-compatible server, from the same model
references as generation (pkg:, hf:, an absolute path, a stored checkpoint's local folder).

    python -m valuedrift_trainer serve-judge --model hf:Qwen/Qwen2.5-7B-Instruct --name qwen-judge \
        --port 8090 --tensor-parallel 2

The judge client needs log-probabilities of the label tokens, so the server is started with
``--max-logprobs 20`` (the spec's `judge.topLogprobs` is at most 20). Point the cpu workers at it with
VALUEDRIFT_JUDGE_BASE_URL=http://<host>:8090/v1 and VALUEDRIFT_JUDGE_SERVED_MODELS=qwen-judge, and
measure it first with ``npm run lineage -- judge-check``. Needs vLLM and CUDA: refused otherwise.
"""

from __future__ import annotations

import os
import sys

from . import models
from .events import TrainerError


def server_argv(model_dir: str, name: str, host: str, port: int, tensor_parallel: int, python: str = sys.executable) -> list[str]:
    """The vLLM server's command line (an argument list: no shell)."""
    if not name or any(c.isspace() for c in name):
        raise TrainerError("bad_config", f"--name must be a non-empty name without spaces, got {name!r}")
    if not 1 <= port <= 65535:
        raise TrainerError("bad_config", f"--port must be in 1..65535, got {port}")
    if tensor_parallel < 1:
        raise TrainerError("bad_config", f"--tensor-parallel must be >= 1, got {tensor_parallel}")
    return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--tokenizer", model_dir,
            "--served-model-name", name, "--host", host, "--port", str(port),
            "--tensor-parallel-size", str(tensor_parallel), "--max-logprobs", "20"]


def main(model: str, name: str, host: str, port: int, tensor_parallel: int) -> None:
    from .generate import _vllm_available

    ref = models.resolve(model)
    if ref.kind == "tiny-llama3b":
        raise TrainerError("bad_config", f"serve-judge cannot serve {model!r} (a random shape model)")
    if not _vllm_available():
        raise TrainerError("bad_config", "serve-judge needs vLLM and a CUDA device; neither the package nor a GPU "
                                         "is optional here (the local MiniLM/SmolLM2 judges serve CPU machines)")
    argv = server_argv(models.local_dir(ref), name, host, port, tensor_parallel)
    sys.stdout.flush()
    os.execv(argv[0], argv)
