"""How good an image is, given the common steps and the prompt similarity: fitted HIQM or live diffusion."""
from __future__ import annotations

from quality_oracle.base import ECDiffSchedule, QualityOracle, QualityRequest
from quality_oracle.hiqm import HIQMOracle

__all__ = ["ECDiffSchedule", "HIQMOracle", "QualityOracle", "QualityRequest", "build_oracle"]


def build_oracle(oracle_config, ecdiff_config) -> QualityOracle:
    """The oracle an env config asks for (`oracle.kind`: fitted | live)."""
    if oracle_config.kind == "fitted":
        oracle = HIQMOracle.from_csv(oracle_config.hiqm_csv)
        return oracle.with_approximation_loss(ecdiff_config.quality_loss_per_approx_step)
    if oracle_config.kind == "live":
        import dataclasses

        from quality_oracle.live import LiveDiffusionOracle

        live = oracle_config.live  # the env config's typed `oracle.live` section, or a plain mapping
        return LiveDiffusionOracle(dataclasses.asdict(live) if dataclasses.is_dataclass(live) else live)
    raise ValueError(f"oracle.kind={oracle_config.kind!r}; allowed: fitted, live")
