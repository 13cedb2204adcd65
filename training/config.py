"""Settings of the two training recipes (mid-training a VLM, fine-tuning it into a VLA): pydantic models, so
a bad value is rejected before any work starts and each field carries its description into the Prefect form."""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field, model_validator

from core.read.formats import FORMATS
from core.settings import Settings, SourceSpec, StorageConfig


class UpdateFreeze(Settings):
    """Parts of the VLM kept frozen (the rest is updated, or carries the LoRA adapters)."""

    vision: bool = Field(False, description="Freeze the vision tower.")
    projector: bool = Field(False, description="Freeze the vision-to-language projector.")
    llm_layers: int | Literal["half"] = Field(
        0, description="Freeze this many of the language model's lowest layers (and the token embeddings below "
        "them); 'half' = the lower half.")

    @model_validator(mode="after")
    def _non_negative(self) -> UpdateFreeze:
        if isinstance(self.llm_layers, int) and self.llm_layers < 0:
            raise ValueError("llm_layers must be >= 0 or 'half'")
        return self


class LoraSpec(Settings):
    """LoRA adapters (peft) on the chosen linear layers; merged into the weights when the model is saved."""

    rank: int = Field(16, ge=1, description="Adapter rank r.")
    alpha: float = Field(32.0, gt=0, description="Scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: str | list[str] = Field(
        r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        description="Module names (a list of name suffixes) or one regular expression over full names; the "
        "default: the language model's attention and MLP projections.")


class TrainConfig(Settings):
    """The optimisation loop: shared by both recipes."""

    steps: int = Field(100, ge=1, description="Optimizer steps.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW).")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Cosine floor as a fraction of the peak LR.")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of the steps spent in linear warm-up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(8, ge=1, description="Samples per micro-batch on each rank.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated into one optimizer step.")
    clip: float | None = Field(1.0, gt=0, description="Gradient-norm clipping threshold; None = no clipping.")
    freeze: UpdateFreeze = Field(default_factory=UpdateFreeze, description="Parts kept frozen.")
    lora: LoraSpec | None = Field(None, description="Train LoRA adapters instead of the weights; None = no LoRA.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about a third more compute.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto = bf16 autocast on CUDA, fp32 on CPU; bf16 requires CUDA.")
    seed: int = Field(0, description="Seeds the model head, the data order and the RNG streams.")
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes per rank (0 = in the loop); None = on CUDA one per CPU "
        "the rank's torch has beyond one, at most 4, so reading overlaps the step; on CPU 0 (a worker would take the "
        "step's cores: measured 293 -> 238 samples/s on 2 cores).")
    shuffle_buffer: int = Field(256, ge=1, description="Samples held by the streaming shuffle buffer.")
    log_every: int = Field(10, ge=1, description="Log metrics every N optimizer steps.")
    eval_every: int = Field(0, ge=0, description="Run the evaluation hook every N steps (0 = only at the end).")
    checkpoint_every: int = Field(0, ge=0, description="Checkpoint every N steps (0 = only at the end).")
    checkpoint_uri: str | None = Field(
        None, description="Where checkpoints go (local path or s3://); None = no checkpoints, no resume.")
    resume: bool = Field(True, description="Continue from the latest checkpoint under checkpoint_uri if any.")
    peak_tflops: float | None = Field(
        None, gt=0, description="Accelerator peak TFLOP/s for MFU; None = looked up from the GPU name.")

    @model_validator(mode="before")
    @classmethod
    def _freeze_vision(cls, data: Any) -> Any:
        """``freeze_vision: true`` (the setting's earlier name) still works, as ``freeze.vision``."""
        if isinstance(data, dict) and "freeze_vision" in data:
            data = dict(data)
            old = data.pop("freeze_vision")
            warnings.warn("train.freeze_vision is deprecated: use train.freeze.vision", DeprecationWarning,
                          stacklevel=2)
            data["freeze"] = {"vision": bool(old), **dict(data.get("freeze") or {})}
        return data


class MixSpec(Settings):
    """General caption/VQA samples mixed into mid-training (keeps the VLM's general skills)."""

    ratio: float = Field(gt=0, lt=1, description="Share of the training samples drawn from the general data.")
    manifest_uri: str | None = Field(
        None, description="A manifest whose selected rows are the general data; None = the curation manifest's "
        "unselected rows.")
    max_samples: int = Field(50_000, ge=1, description="At most this many general rows (a seeded uniform sample).")


class ChatDataConfig(Settings):
    """How manifest samples become chat conversations."""

    caption_instruction: str = Field(
        "Describe the image.", description="The user turn for caption samples (the caption is the answer).")
    max_length: int = Field(512, ge=8, description="Samples longer than this (in tokens) are skipped.")
    mix: MixSpec | None = Field(None, description="General data mixed in; None = the curated samples only.")
    chat_template: str | None = Field(
        None, description="A Jinja chat template for a model that ships none (or to replace its own); saved with "
        "the trained model. Prefix-LM families (PaliGemma) need none: they train on prefix + suffix.")


class MidtrainConfig(Settings):
    """Mid-train a VLM on the samples a curation manifest selects."""

    model: str = Field(description="The VLM to start from: local directory, s3:// prefix or hub id.")
    manifest_uri: str = Field(description="The curation manifest (manifest.parquet with its sidecar).")
    output_uri: str = Field(description="Where the mid-trained VLM is saved (directory or s3:// prefix).")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object storage settings.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation settings.")
    data: ChatDataConfig = Field(default_factory=ChatDataConfig, description="Chat formatting.")


class RobotDataConfig(Settings):
    """Robot episodes as (image, instruction, action chunk) samples."""

    sources: list[SourceSpec] = Field(min_length=1, description="LeRobot v3 datasets (image_key = camera).")
    chunk_size: int = Field(4, ge=1, description="Actions predicted per sample (H), from the frame on.")
    heldout_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of episodes held out for evaluation (rounded up when > 0).")
    split_seed: int = Field(0, description="Seed of the episode-level held-out split.")
    prompt: str = Field(
        "What action should the robot take to {instruction}?",
        description="The user turn after the image; {instruction} is the episode's task.")
    chat_template: str | None = Field(
        None, description="A Jinja chat template for a model that ships none (or to replace its own); saved with "
        "the trained model. Prefix-LM families (PaliGemma) need none: they train on prefix + suffix.")

    @model_validator(mode="after")
    def _lerobot_only(self) -> RobotDataConfig:
        if bad := [s.name for s in self.sources if not FORMATS[s.format].robot]:
            raise ValueError(f"sources must be lerobot datasets, not {bad}")
        return self


class VLAHeadConfig(Settings):
    """The action head on the VLM's last hidden state (the paper's head)."""

    action_dim: int | None = Field(None, ge=1, description="Action size A; None = taken from the data.")
    gripper_index: int | None = Field(
        -1, description="Which action dimension is the binary gripper (BCE); negative counts from the end; "
        "None = every dimension is continuous (Huber).")
    hidden_dim: int = Field(256, ge=1, description="Width of the MLP's hidden layer.")
    pooling: Literal["last", "mean"] = Field(
        "last", description="last = the last valid token's hidden state (it has seen the whole prompt); "
        "mean = mean over valid tokens.")
    huber_delta: float = Field(1.0, gt=0, description="Huber loss delta (normalised action units).")
    gripper_weight: float = Field(1.0, ge=0, description="Weight of the gripper BCE against the arm loss.")


class ClosedLoopConfig(Settings):
    """Closed-loop evaluation in the toy world (``synth.toyworld``): N seeded rollouts of the fine-tuned VLA."""

    episodes: int = Field(20, ge=1, description="Rollouts (seeds seed, seed+1, ...).")
    seed: int = Field(
        100_000, ge=0, description="First rollout seed; far from the expert's training seeds (0, 1, ...).")
    image_size: int = Field(64, ge=16, le=512, description="Camera size; the robot data's (emt synth image_size).")
    max_steps: int = Field(24, ge=1, description="Steps before an episode counts as failed.")
    execute: int = Field(1, ge=1, description="Actions of each predicted chunk executed before predicting again.")
    gif_episodes: int = Field(4, ge=0, description="Rollouts shown in the GIF artifact (0 = no GIF).")
    level: float = Field(0.95, gt=0, lt=1, description="Confidence level of the Wilson interval.")


class FinetuneConfig(Settings):
    """Fine-tune a (mid-trained) VLM into a VLA on robot episodes, evaluated on held-out episodes."""

    model: str = Field(description="The VLM to start from: local directory, s3:// prefix or hub id.")
    output_uri: str = Field(description="Where the VLA is saved (directory or s3:// prefix).")
    robot: RobotDataConfig = Field(description="Robot datasets, chunking and the held-out split.")
    head: VLAHeadConfig = Field(default_factory=VLAHeadConfig, description="Action head.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object storage settings.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation settings.")
    eval_batches: int | None = Field(
        None, ge=1, description="Held-out batches per evaluation; None = every held-out sample.")
    closed_loop: ClosedLoopConfig | None = Field(
        None, description="Roll the VLA out in the toy world after training (robot data from emt synth's toy "
        "world); None = held-out evaluation only.")
