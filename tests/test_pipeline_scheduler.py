"""Scheduler factory: the reference's DDIM numbers, and the optional solvers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from champ_core.pipeline.scheduler import REFERENCE_SCHEDULER_CONFIG, SOLVERS, SchedulerError, make_scheduler

FIXTURE = Path(os.environ.get("CHAMP_PARITY_DIR", Path(__file__).parent / "fixtures" / "champ_parity"))


def _reference():
    return json.loads((FIXTURE / "windows.json").read_text())["scheduler"]


def test_default_matches_reference_schedule():
    ref = _reference()
    assert {k: REFERENCE_SCHEDULER_CONFIG[k] for k in ref["kwargs"]} == ref["kwargs"]
    scheduler = make_scheduler()
    assert type(scheduler).__name__ == "DDIMScheduler"
    expected = torch.tensor(ref["alphas_cumprod_float32"])
    # Within float32 rounding, not bit-equal: torch.linspace and the zero-SNR rescale round
    # differently in their AVX2 and AVX-512 kernels (up to 4e-7 here, on a scale of 1).
    assert scheduler.alphas_cumprod.shape == expected.shape
    assert (scheduler.alphas_cumprod - expected).abs().max().item() <= 2e-6
    assert scheduler.alphas_cumprod[-1].item() == expected[-1].item() == 0.0  # zero terminal SNR, exactly
    assert float(scheduler.init_noise_sigma) == ref["init_noise_sigma"]
    assert float(scheduler.final_alpha_cumprod) == ref["final_alpha_cumprod"]
    for steps in (20, 3):
        scheduler.set_timesteps(steps)
        assert scheduler.timesteps.tolist() == ref[f"timesteps_{steps}"]


def test_three_step_offset_quirk_is_reproduced():
    # with 3 steps the step from t=666 lands on the alphas of 333 (t - 1000 // 3), not on 332
    ref = _reference()["steps_3"]
    scheduler = make_scheduler()
    scheduler.set_timesteps(3)
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    v = torch.randn_like(x)
    t = int(ref[1]["t"])
    a_t, a_prev = (torch.tensor(ref[1][k], dtype=torch.float64) for k in ("alpha_prod_t", "alpha_prod_t_prev"))
    x64, v64 = x.double(), v.double()
    x0 = a_t.sqrt() * x64 - (1 - a_t).sqrt() * v64
    eps = a_t.sqrt() * v64 + (1 - a_t).sqrt() * x64
    expected = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    out = scheduler.step(v, t, x).prev_sample
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_scaled_linear_option_changes_the_betas():
    linear, scaled = make_scheduler(), make_scheduler(beta_schedule="scaled_linear")
    assert not torch.allclose(linear.alphas_cumprod, scaled.alphas_cumprod)
    assert scaled.alphas_cumprod[-1] == 0  # still zero terminal SNR


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_every_solver_denoises_to_finite_values(solver):
    scheduler = make_scheduler(solver)
    scheduler.set_timesteps(4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 4, 4, generator=generator) * scheduler.init_noise_sigma
    kwargs = {"generator": generator} if solver in ("euler_ancestral", "ddpm", "lcm", "tcd") else {}
    for t in scheduler.timesteps:
        scheduler.scale_model_input(x, t)
        x = scheduler.step(0.5 * torch.randn(x.shape, generator=generator), t, x, **kwargs).prev_sample
    assert torch.isfinite(x).all()
    assert scheduler.config.prediction_type == "v_prediction"


def test_unknown_names_are_clear_errors():
    with pytest.raises(SchedulerError, match="unknown solver"):
        make_scheduler("heun")
    with pytest.raises(SchedulerError, match="beta schedule"):
        make_scheduler(beta_schedule="cosine")
