"""The private torch API behind ``hypergrad/_compat.py``: no other module of the package reaches
into torch's private names, each wrapper does what the optimizers rely on, and the torch release
the suite runs on (and the floor ``pyproject.toml`` declares) is one the module names as tested."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import hypergrad
from hypergrad import _compat

PACKAGE = Path(hypergrad.__file__).parent
#: Private names reached on any object (a tensor's, a scheduler's, an optimizer's).
PRIVATE_ATTRIBUTES = {"_version", "_last_lr", "_group_tensors_by_device_and_dtype",
                      "_accelerator_graph_capture_health_check"}


def _rooted_at_torch(node: ast.expr) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id == "torch"


def _private_uses(path: Path) -> list[str]:
    """``torch._x`` (but the ``torch._foreach_*`` kernels), ``from torch... import _x``, the
    private attributes above and ``getattr(x, "_y")``, in code (docstrings and comments do not
    count)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch"):
            found += [f"from {node.module} import {alias.name}" for alias in node.names if alias.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if node.attr in PRIVATE_ATTRIBUTES or (_rooted_at_torch(node.value) and not node.attr.startswith("_foreach_")):
                found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            name = node.args[1] if len(node.args) > 1 else None
            if isinstance(name, ast.Constant) and str(name.value).startswith("_") and not str(name.value).startswith("__"):
                found.append(f"line {node.lineno}: {node.func.id}(..., {name.value!r})")
    return found


def test_only_the_compat_module_reaches_into_torch_privates():
    uses = {str(path.relative_to(PACKAGE)): _private_uses(path) for path in PACKAGE.rglob("*.py")
            if path.name != "_compat.py"}
    assert {name: found for name, found in uses.items() if found} == {}
    assert _private_uses(PACKAGE / "_compat.py")  # (the scan does see them where they are)


def test_the_running_and_the_declared_torch_are_tested_releases():
    running = torch.__version__.split("+")[0]
    assert running in _compat.TESTED_TORCH, (
        f"torch {running} is not among the releases hypergrad is tested on ({_compat.TESTED_TORCH}): run the "
        "whole suite on it, then add it to hypergrad/_compat.py's TESTED_TORCH")
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    (floor,) = re.findall(r'"torch>=([0-9.]+)"', pyproject)
    oldest = min(_compat.TESTED_TORCH, key=lambda v: tuple(int(x) for x in v.split(".")))
    assert oldest.startswith(floor), f"pyproject.toml requires torch>={floor}, the oldest tested is {oldest}"


def test_the_wrappers_do_what_the_optimizers_rely_on():
    cpu = [torch.zeros(2), torch.zeros(3, dtype=torch.float64)]
    assert _compat.default_foreach(cpu) is False  # torch's default: no foreach on the CPU
    assert _compat.step_value(torch.tensor(3.0)) == 3.0
    grouped = _compat.group_by_device_and_dtype([cpu, [t + 1 for t in cpu]])
    assert sorted(indices for _, indices in grouped.values()) == [[0], [1]]
    tensor = torch.zeros(2)
    before = _compat.version(tensor)
    tensor.add_(1)
    assert _compat.version(tensor) == before + 1
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    _compat.capture_health_check(optimizer)  # not capturing: passes
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    _compat.set_last_lr(scheduler, [0.25])
    assert scheduler.get_last_lr() == [0.25]
    with pytest.raises(RuntimeError):
        _compat.check_fused_param(torch.zeros(2, dtype=torch.complex64))


def test_the_fused_kernels_are_torch_optims():
    params = [torch.ones(3)]
    _compat.fused_sgd(params, [torch.ones(3)], [], weight_decay=0.0, momentum=0.0, lr=0.5, dampening=0.0,
                      nesterov=False, maximize=False, is_first_step=True)
    assert torch.equal(params[0], torch.full((3,), 0.5))
    for kernel in (_compat.fused_adam, _compat.fused_adamw, _compat.fused_adagrad):
        assert callable(kernel)
