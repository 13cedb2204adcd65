"""Which weights a run updates, and how: frozen parts, LoRA adapters, gradient checkpointing.

Continued pre-training that keeps the vision tower and the lower half of the language model frozen preserves
what the VLM learnt on the web better than full-parameter updates (VLAct; "Rethinking VLM representation for VLA
initialisation", 2026), and LoRA is a sound VLA start as well. The parts are found by the names every family in
transformers uses (``vision_tower``/``visual``/``vision_model``; ``multi_modal_projector``/``merger``/
``connector``; the decoder's ``layers``). LoRA adapters (``peft``) are merged into the weights on save, so a
saved model loads without peft.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from training.config import TrainConfig, UpdateFreeze

# Where the vision encoder and the projector sit in the families transformers ships.
VISION_TOWERS = ("model.vision_tower", "vision_tower", "model.visual", "visual", "model.vision_model",
                 "vision_model")
PROJECTORS = ("model.multi_modal_projector", "multi_modal_projector", "model.visual.merger",
              "model.visual.deepstack_merger_list", "model.connector", "connector")


def _find(model: nn.Module, names: tuple[str, ...]) -> dict[str, nn.Module]:
    found = {}
    for name in names:
        try:
            found[name] = model.get_submodule(name)
        except AttributeError:
            continue
    return found


def vision_tower(model: nn.Module) -> nn.Module:
    """The model's vision encoder; a ValueError naming ``train.freeze.vision`` when it cannot be found."""
    if towers := _find(model, VISION_TOWERS):
        return next(iter(towers.values()))
    raise ValueError(f"train.freeze.vision: no vision tower found in {type(model).__name__} "
                     f"(looked for {', '.join(VISION_TOWERS)})")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The language model's decoder layers, bottom first; a ValueError naming ``train.freeze.llm_layers``."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"train.freeze.llm_layers: no decoder layers found in {type(model).__name__}")
    return layers


def freeze(model: nn.Module, spec: UpdateFreeze) -> None:
    """Stop gradients to the parts ``spec`` names. A projector inside the vision tower (Qwen's merger) stays
    trainable unless ``spec.projector``; freezing lower LLM layers freezes the token embeddings below them too."""
    projectors = list(_find(model, PROJECTORS).values())
    if spec.vision:
        kept = {id(p) for m in projectors for p in m.parameters()}
        for p in vision_tower(model).parameters():
            if id(p) not in kept:
                p.requires_grad_(False)
    if spec.projector:
        if not projectors:
            raise ValueError(f"train.freeze.projector: no projector found in {type(model).__name__} "
                             f"(looked for {', '.join(PROJECTORS)})")
        for m in projectors:
            m.requires_grad_(False)
    if spec.llm_layers:
        layers = decoder_layers(model)
        count = len(layers) // 2 if spec.llm_layers == "half" else spec.llm_layers
        if count > len(layers):
            raise ValueError(f"train.freeze.llm_layers: {count} layers asked, the model has {len(layers)}")
        for layer in layers[:count]:
            layer.requires_grad_(False)
        if count:
            model.get_input_embeddings().requires_grad_(False)


def prepare(model: nn.Module, config: TrainConfig) -> nn.Module:
    """``model`` set up for the run's update mode: frozen parts, gradient checkpointing, LoRA adapters (the
    returned module wraps ``model`` then). Call before the optimizer is built and the checkpoint identity taken."""
    freeze(model, config.freeze)
    if config.gradient_checkpointing:
        # Non-reentrant: gradients reach the adapters and unfrozen layers even when the inputs need none.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if config.lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    lora = config.lora
    return get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=lora.target_modules, bias="none"))


def merged(model: nn.Module) -> nn.Module:
    """The plain model with any LoRA adapters merged into its weights (what is saved)."""
    merge: Any = getattr(model, "merge_and_unload", None)
    return merge() if merge is not None else model


def trainable_share(model: nn.Module) -> float:
    """Share of the parameters that the run updates (logged, so a frozen or LoRA run is visible)."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / max(total, 1)
