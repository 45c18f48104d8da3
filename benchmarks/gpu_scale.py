"""Cost of fail-closed training and of a GCG-sized forward batch at Llama-3-8B scale, on a lent GPU.

    python benchmarks/gpu_scale.py [--out gpu_scale.json]      # one GPU, bf16
    python benchmarks/gpu_scale.py --tiny                       # a small config on CPU, in seconds

Self-contained (torch, transformers, peft; no mechrefusal, no transformer-lens, no weights): the model
is a random-initialised ``LlamaConfig`` of Llama-3-8B's shape. The ablation is what the trainer
applies, written as plain torch hooks: a random unit vector projected out of every decoder layer's
input, attention output and MLP output, at every position. Sections, each timed ablated and plain:

* ``lora``: a fail-closed step with LoRA (rank 16, every linear map): CE on harmful-like rows under the
  ablation, KL to the reference (the same model with the adapters disabled) on harmless-like rows,
  AdamW step.
* ``gcg``: forward passes (no gradient) over a GCG candidate batch, in chunks.
* ``fsdp_full``: the same step as ``lora`` with every weight trained, FSDP2 (one unit per decoder layer;
  one process unless started with ``torchrun``) and activation checkpointing, pure bf16 AdamW and a
  separate frozen reference; an out-of-memory is reported, not raised.

Prints one JSON object: per section and variant the step time, tokens/s and peak memory, and the
ablated / plain time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LLAMA3_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=8192,
    rope_theta=500000.0,
)
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    max_position_embeddings=512,
)


def build(config_kwargs: dict, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random-initialised Llama of the given shape, built directly on ``device`` in ``dtype``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**config_kwargs, tie_word_embeddings=False, use_cache=False)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model


def add_ablation(model: torch.nn.Module, direction: Tensor) -> list[torch.utils.hooks.RemovableHandle]:
    """Project ``direction`` (unit, d_model) out of every layer's input, attention and MLP outputs."""

    def project(h: Tensor) -> Tensor:
        u = direction.to(h.dtype)
        return h - (h @ u).unsqueeze(-1) * u

    def layer_input(module, args, kwargs):
        if args:
            return (project(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": project(kwargs["hidden_states"])}

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under peft
    handles = []
    for layer in base.model.layers:
        handles.append(layer.register_forward_pre_hook(layer_input, with_kwargs=True))
        handles.append(layer.self_attn.register_forward_hook(lambda m, i, out: (project(out[0]), *out[1:])))
        handles.append(layer.mlp.register_forward_hook(lambda m, i, out: project(out)))
    return handles


def timed(fn: Callable[[], None], device: torch.device, repeats: int) -> dict:
    """Mean seconds of ``fn`` over ``repeats`` runs after one warm-up, and peak memory (GiB)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process high-water mark
    return {"seconds": (time.perf_counter() - started) / repeats, "peak_memory_gib": round(peak, 2)}


def fail_closed_step(
    model, reference: Callable[[Tensor], Tensor], optimizer, harmful: Tensor, harmless: Tensor, direction: Tensor | None
) -> None:
    """One step: CE on ``harmful`` under the ablation (if ``direction``), KL to the reference on
    ``harmless``. Each loss is differentiated while its hooks are in place, which activation
    checkpointing's recomputation needs."""
    optimizer.zero_grad(set_to_none=True)
    handles = add_ablation(model, direction) if direction is not None else []
    try:
        logits = model(harmful).logits[:, :-1].float()
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), harmful[:, 1:].reshape(-1)).backward()
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        target = reference(harmless).float().log_softmax(-1)
    own = model(harmless).logits.float().log_softmax(-1)
    F.kl_div(own, target, log_target=True, reduction="batchmean").backward()
    optimizer.step()


def training_section(model, reference, device, args, direction) -> dict:
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)
    generator = torch.Generator(device=device).manual_seed(0)
    harmful, harmless = (
        torch.randint(model.config.vocab_size, (args.batch, args.seq), device=device, generator=generator)
        for _ in range(2)
    )
    model.train()
    result = {"trainable_parameters": sum(p.numel() for p in parameters), "tokens_per_step": 2 * args.batch * args.seq}
    for name, ablation in (("plain", None), ("ablated", direction)):
        run = timed(
            lambda ablation=ablation: fail_closed_step(model, reference, optimizer, harmful, harmless, ablation),
            device,
            args.repeats,
        )
        result[name] = {**run, "tokens_per_s": round(result["tokens_per_step"] / run["seconds"], 1)}
    result["ablated_over_plain"] = round(result["ablated"]["seconds"] / result["plain"]["seconds"], 3)
    return result


def lora_section(model, device, args, direction) -> dict:
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))

    def reference(ids: Tensor) -> Tensor:
        with peft_model.disable_adapter():
            return peft_model(ids).logits

    result = training_section(peft_model, reference, device, args, direction)
    peft_model.unload()  # the plain base model back for the next section
    return result


def gcg_section(model, device, args, direction) -> dict:
    generator = torch.Generator(device=device).manual_seed(1)
    candidates = torch.randint(
        model.config.vocab_size, (args.candidates, args.candidate_tokens), device=device, generator=generator
    )
    model.eval()

    def forward_all() -> None:
        with torch.no_grad():
            for chunk in candidates.split(args.chunk):
                model(chunk).logits[:, -1].float().log_softmax(-1)

    result = {"candidates": args.candidates, "tokens": args.candidate_tokens, "chunk": args.chunk}
    for name, ablated in (("plain", False), ("ablated", True)):
        handles = add_ablation(model, direction) if ablated else []
        try:
            run = timed(forward_all, device, args.repeats)
        finally:
            for handle in handles:
                handle.remove()
        result[name] = {**run, "tokens_per_s": round(args.candidates * args.candidate_tokens / run["seconds"], 1)}
    result["ablated_over_plain"] = round(result["ablated"]["seconds"] / result["plain"]["seconds"], 3)
    return result


def fsdp_section(config_kwargs, device, dtype, args, direction) -> dict:
    from torch.distributed.fsdp import fully_shard

    if not torch.distributed.is_initialized():
        for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29533"), ("RANK", "0"), ("WORLD_SIZE", "1")):
            os.environ.setdefault(key, value)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        model = build(config_kwargs, device, dtype)
        frozen = build(config_kwargs, device, dtype).eval().requires_grad_(False)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        result = training_section(model, lambda ids: frozen(ids).logits, device, args, direction)
        result["processes"] = torch.distributed.get_world_size()
        return result
    except torch.OutOfMemoryError as error:
        return {"out_of_memory": str(error).splitlines()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a small config (CPU check in seconds)")
    parser.add_argument("--batch", type=int, default=8, help="rows of each of the harmful and harmless halves")
    parser.add_argument("--seq", type=int, default=512, help="tokens per training row")
    parser.add_argument("--candidates", type=int, default=512, help="GCG candidates per batch")
    parser.add_argument("--candidate-tokens", type=int, default=40)
    parser.add_argument("--chunk", type=int, default=128, help="GCG candidates per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-fsdp", action="store_true")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if args.tiny:
        args.batch, args.seq, args.candidates, args.candidate_tokens, args.chunk = 2, 32, 16, 12, 8

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dtype = torch.bfloat16
    config_kwargs = TINY if args.tiny else LLAMA3_8B
    torch.manual_seed(0)
    direction = F.normalize(torch.randn(config_kwargs["hidden_size"], device=device), dim=0)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "config": config_kwargs,
        "dtype": str(dtype),
        "batch": args.batch,
        "seq": args.seq,
        "versions": {"torch": torch.__version__},
    }
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # one process: LoRA and GCG on the whole model
        model = build(config_kwargs, device, dtype).requires_grad_(False)
        report["lora"] = lora_section(model, device, args, direction)
        report["gcg"] = gcg_section(model, device, args, direction)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.skip_fsdp:
        report["fsdp_full"] = fsdp_section(config_kwargs, device, dtype, args, direction)
    if int(os.environ.get("RANK", "0")) == 0:
        text = json.dumps(report, indent=2)
        print(text)
        if args.out:
            with open(args.out, "w") as file:
                file.write(text + "\n")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
