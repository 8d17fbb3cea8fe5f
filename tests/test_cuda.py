"""On CUDA: step() never waits for the GPU, captures into a CUDA graph with capturable=True, and
gives the CPU's result. Skipped without a CUDA device."""

from __future__ import annotations

import pytest
import torch

import hypergrad
from conftest import TinyNet, batch_loss, make_batches

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# Case: optimizer, settings, relative tolerance against the CPU. CUDA Adam computes its bias
# corrections on the device from the float32 step count (torch.optim's capturable arithmetic); the
# CPU reads the count on the host in double precision.
CASES = {
    "sgd": (hypergrad.SGDHD, dict(lr=0.05, hypergrad_lr=1e-2), 1e-10),
    "sgd-wd-maximize": (hypergrad.SGDHD, dict(lr=0.05, hypergrad_lr=1e-2, weight_decay=1e-2, maximize=True), 1e-10),
    "momentum": (hypergrad.SGDHD, dict(lr=0.02, hypergrad_lr=1e-2, momentum=0.9), 1e-10),
    "nesterov-wd": (hypergrad.SGDHD, dict(lr=0.02, hypergrad_lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-2), 1e-10),
    "multiplicative-bounded": (
        hypergrad.SGDHD,
        dict(lr=0.02, hypergrad_lr=0.05, momentum=0.9, hypergrad_rule="multiplicative", lr_bounds=(1e-3, 0.05)),
        1e-10,
    ),
    "adam": (hypergrad.AdamHD, dict(lr=0.01, hypergrad_lr=1e-4), 1e-5),
    "amsgrad-wd": (hypergrad.AdamHD, dict(lr=0.01, hypergrad_lr=1e-4, amsgrad=True, weight_decay=1e-2), 1e-5),
}
STEPS = 10
CUDA = torch.device("cuda")


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


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_step_never_synchronizes_and_matches_the_cpu(case, foreach):
    hd_cls, settings, rtol = CASES[case]
    gradients = _gradients(STEPS)
    runs = {}
    for device in (torch.device("cpu"), CUDA):
        params = _fresh_params(device)
        optimizer = hd_cls(params, foreach=foreach, **settings)
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


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_captured_step_replays_like_eager_steps(case, foreach):
    hd_cls, settings, _ = CASES[case]
    warmup = 3
    gradients = [[g.to(CUDA) for g in step] for step in _gradients(warmup + STEPS)]

    eager_params = _fresh_params(CUDA)
    eager = hd_cls(eager_params, foreach=foreach, **settings)
    eager_lrs = []
    for step_gradients in gradients:
        for p, g in zip(eager_params, step_gradients):
            p.grad = g.clone()
        eager.step()
        eager_lrs.append(float(eager.param_groups[0]["lr"]))

    params = _fresh_params(CUDA)
    for p in params:
        p.grad = torch.zeros_like(p)  # static gradient buffers, filled before every step
    optimizer = hd_cls(params, foreach=foreach, capturable=True, **settings)
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

