"""When a training run stops: total iterations, total env steps, or seconds of this invocation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

DEFAULT_TIME_LIMIT_S = 300.0


@dataclass(frozen=True)
class StopRules:
    """`iterations` and `timesteps` (env steps, i.e. decision points) count the whole run, resumed
    parts included; `time_limit_s` counts this invocation. With none given, `time_limit_s` is
    DEFAULT_TIME_LIMIT_S."""

    iterations: Optional[int] = None
    timesteps: Optional[int] = None
    time_limit_s: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("iterations", "timesteps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"stop rule {name}={value!r}; allowed: an integer >= 1 or None")
        t = self.time_limit_s
        if t is not None and not (isinstance(t, (int, float)) and t > 0 and t != float("inf")):
            raise ValueError(f"stop rule time_limit_s={t!r}; allowed: a finite number of seconds > 0 or None")

    def with_default(self) -> "StopRules":
        if self.iterations is None and self.timesteps is None and self.time_limit_s is None:
            return StopRules(time_limit_s=DEFAULT_TIME_LIMIT_S)
        return self

    def reason(self, iteration: int, env_steps: float, session_s: float) -> Optional[str]:
        """Why the run stops now, or None to train another iteration."""
        if self.iterations is not None and iteration >= self.iterations:
            return f"reached {self.iterations} iterations"
        if self.timesteps is not None and env_steps >= self.timesteps:
            return f"reached {self.timesteps:,} env steps"
        if self.time_limit_s is not None and session_s >= self.time_limit_s:
            return f"time limit {self.time_limit_s:.0f} s"
        return None
