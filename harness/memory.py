"""How much memory a run will need, estimated from its config alone, and the check that refuses, before anything is
written, a run its device cannot hold (`train.memory_check=false` runs it anyway).

The estimate adds what a run allocates: the parameters with their gradients and optimiser state (and the float64 copy
the gradient profile trains through), the task's data tensors (evaluation and test sets, profile batch, training batch;
the test set is drawn only at the end, so this is an upper bound), and the largest of three phases that never overlap:
a training step (the activations kept for backward), an evaluation chunk and a gradient profile. Activations are counted in
values kept per sequence, position and unit of width (hidden size or d_model), which each model's config gives
(`activation_values`, `profile_extra_bytes`; the built-in models' constants were measured as the peak RSS growth of
short CPU runs under torch 2.13 and are checked against fresh measurements, within a factor of 2, by
tests/harness/test_memory.py). So are the parameters (`param_count`). A model that gives neither has its parameters
counted on the meta device and only its outputs' activations estimated.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .errors import ConfigError
from .models import MODELS
from .models.configs import GATES

#: the evaluation's batch, fixed so that results never depend on how evaluation is batched (train.py evaluates with it)
EVAL_CHUNK = 256
#: at the other evaluation lengths (eval.lengths) a chunk holds about this many tokens (at most EVAL_CHUNK sequences),
#: a function of that length alone: long sequences stay within memory and every length is batched the same in any run
EVAL_TOKENS = 1 << 15
OVERHEAD = 16 * 2**20  # allocator and oneDNN workspaces of even the smallest run (measured: 12-16 MiB)
LOGIT_VALUES = 2.5  # per output value and position: the logits, the loss's saved softmax and their gradient

@dataclasses.dataclass
class Estimate:
    """Bytes by part; `why` names, for each part, the config keys that make it large."""

    parts: dict[str, int]
    why: dict[str, str]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def largest(self) -> str:
        return max((p for p in self.parts if p != "overhead"), key=self.parts.get)


def parameter_count(cfg) -> int:
    """The number of trainable parameters `cfg.model.build(task)` makes (checked against built models in the tests):
    the model's closed form (`param_count`), or counted on a model built on the meta device."""
    task = cfg.task.build()
    count = cfg.model.param_count(task)
    return _built_count(cfg.model, task) if count is None else count


def _built_count(m, task) -> int:
    import torch

    from .models.plugins import build_model

    with torch.device("meta"):
        model = build_model(m, task)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _optimizer_slots(train) -> int:
    if train.optimizer in ("adam", "adamw"):
        return 2
    return (train.optimizer == "rmsprop") + (train.momentum > 0)


def _sequence_bytes(task) -> int:
    """One sequence of the task's data, input and target, as `task.sample` makes it (one is drawn and measured, so
    every task's target shape counts). A long one is drawn as fake tensors, shapes and dtypes without storage: the
    check must not itself allocate what it is about to refuse (task.length=1e10 asked for 40 GB here)."""
    import torch

    if getattr(task, "seq_len", 0) <= LONG_SEQUENCE:
        x, y = task.sample(1, torch.Generator().manual_seed(0))
        return x.nbytes + y.nbytes
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, y = task.sample(1, torch.Generator().manual_seed(0))
        return x.nbytes + y.nbytes


LONG_SEQUENCE = 100_000  # positions; above it one sequence is measured without allocating it


def estimate(cfg) -> Estimate:
    task, m, t = cfg.task.build(), cfg.model, cfg.train
    L, out = task.seq_len, task.output_size
    P = parameter_count(cfg)
    profile_bytes = 8 if t.grad_profile_dtype == "float64" else 4
    others = [dataclasses.replace(task, length=n) for n in cfg.eval.lengths if n != task.length]
    parts = {"parameters": P * 4 * (2 + _optimizer_slots(t)) + P * profile_bytes * 2,
             "data": (t.eval_size + cfg.eval.test_size + t.grad_profile_batch + t.batch_size) * _sequence_bytes(task)
             + sum(t.eval_size * _sequence_bytes(other) for other in others)}
    key = m.width_key or "width"
    width = getattr(m, key, 0) if m.width_key else 0  # a plugin's activations are not estimated (see above)
    width_key = f"model.{key}={width}"
    values = m.activation_values(cfg.device)
    train_values, eval_values, profile_values = values if values is not None else (0.0, 0.0, 0.0)
    scored = max(t.eval_size, cfg.eval.test_size)  # the larger of the two sets fills the larger chunk
    chunk = min(scored, EVAL_CHUNK)
    size_key = "train.eval_size" if scored == t.eval_size else "eval.test_size"
    evaluation = (chunk * L * (width * eval_values + out * LOGIT_VALUES) * 4, f"min({size_key}, {EVAL_CHUNK})={chunk}")
    for other in others:  # the other evaluation lengths: chunks of about EVAL_TOKENS tokens
        n = min(t.eval_size, max(1, min(EVAL_CHUNK, EVAL_TOKENS // other.seq_len)))
        size = n * other.seq_len * (width * eval_values + out * LOGIT_VALUES) * 4
        if size > evaluation[0]:
            evaluation = (size, f"{n} sequences of {other.seq_len} steps (eval.lengths {other.length})")
    phases = {  # part -> (bytes, the key that sets its batch)
        "training-step activations": (t.batch_size * L * (width * train_values + out * LOGIT_VALUES) * 4,
                                      f"train.batch_size={t.batch_size}"),
        "evaluation activations": evaluation,
        "gradient-profile activations": (t.grad_profile_batch * L * (width * profile_values + out * LOGIT_VALUES)
                                         * profile_bytes, f"train.grad_profile_batch={t.grad_profile_batch}"),
    }
    extra = m.profile_extra_bytes(t.grad_profile_batch, L, cfg.device, profile_bytes)
    if extra:
        size, why = phases["gradient-profile activations"]
        phases["gradient-profile activations"] = (size + extra, why)
    phase = max(phases, key=lambda k: phases[k][0])
    parts[phase] = int(phases[phase][0])
    parts["overhead"] = OVERHEAD
    length = f"sequence length {L} (task.length={task.length})"
    layers = f"model.layers={m.layers}" if hasattr(m, "layers") else f"model={m.name}"
    builtin = values is not None
    per_position = f"{width_key} x {layers}" if builtin else "the outputs (a plugin's own activations are not estimated)"
    if builtin and out * LOGIT_VALUES > width * train_values:  # the head's outputs, not the body, fill the activations
        per_position = f"{out} outputs" + (f" (task.n_symbols={task.n_symbols})" if hasattr(task, "n_symbols") else "")
    sizes = f"{width_key}, {layers}" if m.width_key else layers
    why = {"parameters": f"{P:,} parameters ({sizes}) with gradients and {t.optimizer} state",
           "data": f"train.eval_size={t.eval_size} + eval.test_size={cfg.eval.test_size} sequences of {length}",
           phase: f"{phases[phase][1]} x {length} x {per_position}"}
    return Estimate(parts, why)


def available(device: str) -> tuple[int, str]:
    """(bytes the device has free now, where that figure comes from)."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free, f"cuda:{torch.cuda.current_device()} free memory"
    free, source = _meminfo("MemAvailable"), "available RAM"
    limit = _cgroup_room()
    return (limit, "room under this process's cgroup memory limit") if limit is not None and limit < free \
        else (free, source)


def _meminfo(field: str) -> int:
    try:
        with open("/proc/meminfo") as f:
            return int(next(line for line in f if line.startswith(field + ":")).split()[1]) * 1024
    except (OSError, StopIteration, ValueError):  # not Linux: the physical memory, an upper bound
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cgroup_room() -> int | None:
    for limit, usage in (("memory.max", "memory.current"),  # cgroup v2, then v1
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            cap = Path("/sys/fs/cgroup", limit).read_text().strip()
            used = int(Path("/sys/fs/cgroup", usage).read_text())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 2**60:
            return max(int(cap) - used, 0)
    return None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def check(cfg, at_once: int = 1, free: tuple[int, str] | None = None) -> Estimate:
    """Raise ConfigError when `at_once` runs like `cfg` would need more memory than `cfg.device` has available, unless
    the config says `train.memory_check=false`. Returns the estimate."""
    est = estimate(cfg)
    if not cfg.train.memory_check:
        return est
    limit, source = free or available(cfg.device)
    if est.total * at_once > limit:
        part = est.largest()
        times = f" x {at_once} runs at once (--workers)" if at_once > 1 else ""
        raise ConfigError(f"memory: run {cfg.run_id} needs about {human(est.total)}{times} (mostly {part}, "
                          f"{human(est.parts[part])}: {est.why[part]}) but {cfg.device} has {human(limit)} "
                          f"({source}); make it smaller{' or use fewer --workers' if at_once > 1 else ''}, or set "
                          f"train.memory_check=false to run anyway")
    return est


def bench_bytes(cell: str, B: int, T: int, H: int) -> int:
    """What `seqbench bench` holds for one (cell, B, T, H): the input and the output-gradient weight (float32), the
    input in float64, the float64 reference's activations and gradients, the timed module's, and three copies of the
    weights (float32, float64, gradients)."""
    model = MODELS[cell]
    ref_layer, ref_once = model.activations["reference"]
    torch_layer, torch_once = model.activations["torch"]
    if cell in GATES:
        params = model.gates * H * 2 * H + 2 * model.gates * H
    elif hasattr(model, "layer_params"):  # the LRU, Mamba
        params = model(hidden=H).layer_params()
    else:
        params = model.gates * H * (H + 1)
    return int(B * T * H * (4 * 2 + 8 + 8 * (ref_layer + ref_once) + 4 * (torch_layer + torch_once))) \
        + params * 4 * 6 + OVERHEAD


def check_bench(cells, batches, hiddens, lengths, device: str) -> None:
    """Refuse (ConfigError) a benchmark whose largest combination would not fit the device's available memory."""
    need, cell, B, T, H = max((bench_bytes(c, B, T, H), c, B, T, H)
                              for c in cells for B in batches for T in lengths for H in hiddens)
    limit, source = available(device)
    if need > limit:
        raise ConfigError(f"memory: bench {cell} --batch {B} --length {T} --hidden {H} needs about {human(need)} but "
                          f"{device} has {human(limit)} ({source}); give smaller sizes, or pass --no-memory-check")
