"""The ``model`` group: an smp U-Net, built by the function ``_target_`` names
(:func:`segloss.models.build_model`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from segloss.config.checks import int_at_least, require, rule


@dataclass
class ModelConfig:
    """``name`` labels the option (conf/model/<name>.yaml); the rest are the arguments of
    ``_target_`` (:func:`segloss.models.smp_model`)."""

    name: str = MISSING
    _target_: str = "segloss.models.smp_model"
    arch: str = MISSING
    encoder_name: str = MISSING
    encoder_weights: str | None = MISSING  # null: random init, no downloads
    encoder_depth: int = MISSING
    decoder_channels: list[int] = MISSING

    def __post_init__(self) -> None:
        depth = self.encoder_depth
        rule("model.encoder_depth", depth, int_at_least(depth, 1), "an integer >= 1")
        channels = list(self.decoder_channels)
        require(
            len(channels) == depth and all(int_at_least(c, 1) for c in channels),
            f"model.decoder_channels={channels} must be {depth} (model.encoder_depth) "
            "integers >= 1",
        )
