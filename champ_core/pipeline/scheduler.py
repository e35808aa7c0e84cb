"""Noise schedules for sampling.

The default is the reference's inference scheduler: DDIM over 1000 training steps with *linear*
betas from 0.00085 to 0.012, rescaled to zero terminal SNR, "trailing" timestep spacing,
v-prediction, steps_offset 1, no sample clipping, eta 0.

Options (none changes the default numbers):
- `beta_schedule="scaled_linear"`: the schedule stage-1 training used (the reference's inference
  script means to switch to it but the line has no effect); some users report steadier results.
- `solver`: another diffusers scheduler on the same noise schedule ("euler", "euler_ancestral",
  "dpmpp_2m", "unipc", "ddpm", "lcm", "tcd"). Schedulers that cannot rescale to zero terminal SNR
  are not offered, since the released weights are trained for it.

diffusers is imported inside `make_scheduler`, so importing this module is cheap.
"""

from __future__ import annotations

from typing import Any

# The reference's scheduler arguments (inference.py with enable_zero_snr: true).
REFERENCE_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "steps_offset": 1,
    "clip_sample": False,
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "prediction_type": "v_prediction",
}

# solver name -> (diffusers class name, extra config)
SOLVERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "final_sigmas_type": "zero"}),
    "unipc": ("UniPCMultistepScheduler", {"final_sigmas_type": "zero"}),
    "ddpm": ("DDPMScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
}
BETA_SCHEDULES = ("linear", "scaled_linear")


class SchedulerError(ValueError):
    """An unknown solver or schedule."""


def scheduler_config(beta_schedule: str = "linear", **overrides: Any) -> dict[str, Any]:
    """The reference config with the beta schedule and any other field replaced."""
    if beta_schedule not in BETA_SCHEDULES:
        raise SchedulerError(f"unknown beta schedule {beta_schedule!r}; choose one of {', '.join(BETA_SCHEDULES)}")
    return {**REFERENCE_SCHEDULER_CONFIG, "beta_schedule": beta_schedule, **overrides}


def make_scheduler(solver: str = "ddim", beta_schedule: str = "linear", **overrides: Any):
    """A fresh diffusers scheduler; ("ddim", "linear") is the reference's inference scheduler."""
    import diffusers

    if solver not in SOLVERS:
        raise SchedulerError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    class_name, extra = SOLVERS[solver]
    config = scheduler_config(beta_schedule, **extra, **overrides)
    if solver in ("lcm", "tcd"):
        config.pop("clip_sample", None)
    return getattr(diffusers, class_name).from_config(config)
