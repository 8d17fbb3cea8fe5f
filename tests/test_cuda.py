"""On CUDA: step() never waits for the GPU, captures into a CUDA graph with capturable=True, and
gives the CPU's result, on the for-loop, foreach and fused paths. Skipped without a CUDA device
(and never run on a GPU yet: see docs/performance.md)."""

from __future__ import annotations

import pytest
import torch

import hypergrad
from cases import CASES, TinyNet, batch_loss, make_batches, steps_on

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# Case and relative tolerance against the CPU. CUDA Adam computes its bias corrections on the
# device from the float32 step count (torch.optim's capturable arithmetic); the CPU reads the count
# on the host in double precision.
TOLERANCES = {
    "sgd": 1e-10,
    "sgd-small-wd-maximize": 1e-10,
    "momentum": 1e-10,
    "nesterov-small-wd": 1e-10,
    "momentum-multiplicative-bounded": 1e-10,
    "adam": 1e-5,
    "amsgrad-wd": 1e-5,
}
STEPS = 10
CUDA = torch.device("cuda")
PATHS = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def _gradients(count: int) -> list[list[torch.Tensor]]:
    """Gradients of TinyNet along a fixed sequence of batches, on the CPU (float64)."""
    model = TinyNet()
    result = []
    for batch in make_batches(count):
        model.zero_grad()
        batch_loss(model, batch).backward()
        result.append([p.grad.clone() for p in model.parameters()])
    return result


def _fresh_params(device: torch.device) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().to(device)) for p in TinyNet().parameters()]


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", list(TOLERANCES))
def test_step_never_synchronizes_and_matches_the_cpu(case, path):
    make, rtol = CASES[case].make, TOLERANCES[case]
    gradients = _gradients(STEPS)
    runs = {}
    for device in (torch.device("cpu"), CUDA):
        params = _fresh_params(device)
        optimizer = make(params, **PATHS[path])
        lrs = []
        for step_gradients in gradients:
            for p, g in zip(params, step_gradients):
                p.grad = g.to(device)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
                try:
                    optimizer.step()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            else:
                optimizer.step()
            lrs.append(float(optimizer.param_groups[0]["lr"]))
        runs[device.type] = (lrs, params)
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)
    assert optimizer.param_groups[0]["lr"].device.type == "cuda"
    (cpu_lrs, cpu_params), (cuda_lrs, cuda_params) = runs["cpu"], runs["cuda"]
    assert len(set(cpu_lrs)) > STEPS // 2
    torch.testing.assert_close(cuda_lrs, cpu_lrs, rtol=rtol, atol=0)
    for ours, theirs in zip(cuda_params, cpu_params):
        torch.testing.assert_close(ours.cpu(), theirs.detach(), rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", list(TOLERANCES))
def test_captured_step_replays_like_eager_steps(case, path):
    make = CASES[case].make
    warmup = 3
    gradients = [[g.to(CUDA) for g in step] for step in _gradients(warmup + STEPS)]

    eager_params = _fresh_params(CUDA)
    eager_lrs = steps_on(make(eager_params, **PATHS[path]), eager_params, gradients)

    params = _fresh_params(CUDA)
    for p in params:
        p.grad = torch.zeros_like(p)  # static gradient buffers, filled before every step
    optimizer = make(params, **PATHS[path], capturable=True)
    lrs = []
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        for step_gradients in gradients[:warmup]:
            for p, g in zip(params, step_gradients):
                p.grad.copy_(g)
            optimizer.step()
            lrs.append(float(optimizer.param_groups[0]["lr"]))
    torch.cuda.current_stream().wait_stream(side_stream)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        optimizer.step()
    for step_gradients in gradients[warmup:]:
        for p, g in zip(params, step_gradients):
            p.grad.copy_(g)
        graph.replay()
        lrs.append(float(optimizer.param_groups[0]["lr"]))

    torch.testing.assert_close(lrs, eager_lrs, rtol=1e-12, atol=0)
    for ours, theirs in zip(params, eager_params):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def test_capture_without_capturable_is_refused():
    params = _fresh_params(CUDA)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer = hypergrad.SGDHD(params, lr=0.01, hypergrad_lr=1e-3)
    optimizer.step()
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="capturable"):
        with torch.cuda.graph(graph):
            optimizer.step()



def test_the_bracketing_rule_matches_the_cpu():
    """The bracketing rule while it climbs (``|theta|^2`` added to its statistics, its gate and
    ``first_step_bound`` on every update) gives the CPU's rates and parameters on CUDA. It reads
    its phase on the host while it climbs (``_rates.climbing``), so it is not in the no-sync test."""
    gradients = _gradients(STEPS)
    runs = {}
    for device in (torch.device("cpu"), CUDA):
        params = _fresh_params(device)
        optimizer = hypergrad.AdamHD(params, lr=1e-5, hypergrad_rule="bracket")
        lrs = []
        for step_gradients in gradients:
            for p, g in zip(params, step_gradients):
                p.grad = g.to(device)
            optimizer.step()
            lrs.append(float(optimizer.param_groups[0]["lr"]))
        runs[device.type] = (lrs, params)
    (cpu_lrs, cpu_params), (cuda_lrs, cuda_params) = runs["cpu"], runs["cuda"]
    assert cpu_lrs[-1] > 10 * cpu_lrs[0]  # it climbed
    torch.testing.assert_close(cuda_lrs, cpu_lrs, rtol=1e-5, atol=0)
    for ours, theirs in zip(cuda_params, cpu_params):
        torch.testing.assert_close(ours.cpu(), theirs.detach(), rtol=1e-5, atol=1e-7)
