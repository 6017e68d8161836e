"""One training run: build task, model and optimiser from a resolved config, train, evaluate, profile, record."""

from __future__ import annotations

import contextlib
import signal
import threading
import dataclasses
import hashlib
import math
import os
import resource
import time
import traceback
from pathlib import Path

import torch

from .config import RunConfig
from .gradprofile import gradient_profile
from .memory import EVAL_CHUNK, EVAL_TOKENS  # the evaluation's chunks, which the memory check counts
from .models.plugins import build_model, describe
from .progress import Progress
from .provenance import provenance
from .records import CHECKPOINT, RunWriter, read_json, record_head
from .runs import Busy, Skipped, open_run


def eval_chunk(seq_len: int) -> int:
    """Sequences per evaluation chunk at an extra evaluation length whose sequences have `seq_len` steps."""
    return max(1, min(EVAL_CHUNK, EVAL_TOKENS // seq_len))


def derive_seed(seed: int, stream: str) -> int:
    """Independent, stable seeds for the train/eval/test/profile data streams of one data seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{stream}".encode()).digest()[:8], "little") >> 1


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum)
    return torch.optim.SGD(params, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum)


class RunInterrupted(Exception):
    """A stop was requested (SIGINT/SIGTERM); the run checkpointed at `step` and can resume."""

    def __init__(self, step: int):
        super().__init__(f"interrupted at step {step}; checkpoint saved")
        self.step = step


@dataclasses.dataclass
class LoopState:
    """What the training loop carries from step to step; checkpointed so a resumed run continues bitwise."""

    step: int = 0
    last_eval: dict = dataclasses.field(default_factory=dict)
    solved_step: int | None = None
    diverged_step: int | None = None
    done: bool = False
    intervals: list = dataclasses.field(default_factory=list)  # (tokens, seconds) of training steps, per row
    losses: list = dataclasses.field(default_factory=list)  # 0-d tensors since the last row
    norms: list = dataclasses.field(default_factory=list)
    elapsed: float = 0.0  # seconds spent in earlier attempts


class Trainer:
    """The live state of a run. `step()` is the whole training step (what the benchmark times)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.task = cfg.task.build()
        torch.manual_seed(cfg.seed)  # model initialisation only; data has its own generators
        self.model = build_model(cfg.model, self.task).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.groups = self.model.param_groups()
        self.opt = make_optimizer(cfg, self.params)
        self.gen = self._generator("train")
        self.eval_set = self.task.sample(cfg.train.eval_size, self._generator("eval"), self.device)
        # length generalisation: each length's set from a fresh generator of the same "eval" stream, so a length's
        # set does not depend on which other lengths are listed (and at the training length it is the set above)
        self.length_sets = {}
        for length in cfg.eval.lengths:
            if length != self.task.length:
                task = dataclasses.replace(self.task, length=length)
                self.length_sets[length] = (task, task.sample(cfg.train.eval_size, self._generator("eval"), self.device))
        self.profile_batch = self.task.sample(cfg.train.grad_profile_batch, self._generator("profile"), self.device)
        self.max_norm = cfg.train.clip if cfg.train.clip > 0 else math.inf
        # task.length_dist=uniform: each step's batch at a length drawn from the task's valid lengths up to its own
        self.train_lengths = valid_lengths(self.task) if cfg.task.length_dist == "uniform" else [self.task.length]
        self._at_length: dict[int, object] = {self.task.length: self.task}
        self.at_step: int | None = None  # the training loop's step, while it runs
        self.stop = threading.Event()  # set by a signal handler: the loop checkpoints and stops after the step
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.dtype == "bfloat16"
                         else contextlib.nullcontext())

    def _generator(self, stream: str) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(derive_seed(self.cfg.data_seed, stream))

    def task_at(self, step: int | None):
        """The task that training step `step` samples its batch from: the task itself, or under length_dist=uniform
        the task at that step's length. The length is a function of the data seed and the step alone (not of a
        generator's state), so a resumed run draws the same lengths and an interval's tokens can be counted again."""
        if len(self.train_lengths) == 1 or step is None:
            return self.task
        draw = torch.Generator().manual_seed(derive_seed(self.cfg.data_seed, f"length-{step}"))
        length = self.train_lengths[int(torch.randint(len(self.train_lengths), (1,), generator=draw))]
        if length not in self._at_length:
            self._at_length[length] = dataclasses.replace(self.task, length=length)
        return self._at_length[length]

    def step(self, group_norms: bool = False):
        """One optimiser step on a fresh batch -> (loss, grad norm before clipping, {group: norm} or None). In the
        training loop the batch is at the loop's step's length (`task_at(self.at_step)`)."""
        task = self.task_at(self.at_step)
        x, y = task.sample(self.cfg.train.batch_size, self.gen, self.device)
        with self.autocast:
            loss = task.loss(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        groups = self.group_norms() if group_norms else None
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        self.opt.step()
        return loss.detach(), norm, groups

    def group_norms(self) -> dict[str, float]:
        return {name: torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ps if p.grad is not None])).item()
                for name, ps in self.groups.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """`eval_<stat>` on the fixed set at the training length, then `eval_<stat>@<length>` at each other length."""
        self.model.eval()
        stats = {f"eval_{k}": v for k, v in self._stats(self.task, self.eval_set, EVAL_CHUNK).items()}
        for length, (task, data) in self.length_sets.items():
            stats |= {f"eval_{k}@{length}": v for k, v in self._stats(task, data, eval_chunk(task.seq_len)).items()}
        self.model.train()
        return stats

    def test_set(self):
        """The held-out test set: `eval.test_size` sequences from a stream of their own (`test`), drawn afresh on each
        call, so the same in a resumed run. Never seen by training, selection, early stopping or the solved step."""
        return self.task.sample(self.cfg.eval.test_size, self._generator("test"), self.device)

    @torch.no_grad()
    def test(self) -> dict[str, float]:
        """`test_<stat>` of the final model on the test set, scored once, at the end (drawn only then: it holds no
        memory while the run trains)."""
        self.model.eval()
        stats = {f"test_{k}": v for k, v in self._stats(self.task, self.test_set(), EVAL_CHUNK).items()}
        self.model.train()
        return stats

    def _stats(self, task, data, chunk: int) -> dict[str, float]:
        x, y = data
        parts: dict[str, list[torch.Tensor]] = {}
        for i in range(0, len(x), chunk):
            with self.autocast:
                out = self.model(x[i:i + chunk])
            for k, v in task.eval_stats(out.float(), y[i:i + chunk]).items():
                parts.setdefault(k, []).append(v)
        return {k: torch.cat(v).mean().item() for k, v in parts.items()}

    def profile(self, step: int) -> list[dict]:
        return gradient_profile(self.model, self.task, self.profile_batch, self.cfg.train.grad_profile_dtype, step)

    # --- the loop ----------------------------------------------------------------------------------------------
    def fit(self, writer, progress: Progress, state: LoopState | None = None) -> dict:
        """Train to the end (or divergence, or early stop) from `state` (a checkpoint) or from scratch, writing
        metrics and profiles as it goes. A stop request (SIGINT/SIGTERM) checkpoints and raises RunInterrupted."""
        t, began = self.cfg.train, time.perf_counter()
        if state is None:
            state = self._begin(writer)
        tick = time.perf_counter()
        while not state.done and state.step < t.steps:
            state.step += 1
            step = state.step
            is_eval = step == t.steps or (t.eval_every and step % t.eval_every == 0)
            is_row = is_eval or step % t.log_every == 0
            self.at_step = step
            loss, norm, groups = self.step(group_norms=is_row)
            state.losses.append(loss)
            state.norms.append(norm)
            if is_row:
                self._row(state, writer, progress, groups, is_eval, tick, began)
                tick = time.perf_counter()
            if self.stop.is_set() or (t.checkpoint_every and step % t.checkpoint_every == 0 and not state.done):
                writer.checkpoint(self.state_dict(state, began))
            if self.stop.is_set():
                raise RunInterrupted(step)
        test = None
        if state.diverged_step is None:
            writer.profiles(self.profile(state.step))
            test = self.test()
        state.elapsed += time.perf_counter() - began
        return self.summary(state, test)

    def _begin(self, writer) -> LoopState:
        writer.profiles(self.profile(0))
        state = LoopState(last_eval={"step": 0, **self.evaluate()})
        writer.metrics(state.last_eval)
        state.solved_step = 0 if self.task.solved(state.last_eval) else None
        return state

    def _row(self, state: LoopState, writer, progress, groups, is_eval, tick, began) -> None:
        """Close a logging interval: check finiteness, evaluate if due, write the metrics row."""
        t, step = self.cfg.train, state.step
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - tick
        steps = range(step - len(state.losses) + 1, step + 1)
        state.intervals.append((sum(self.cfg.train.batch_size * self.task_at(k).seq_len for k in steps), seconds))
        losses, norms = torch.stack([torch.stack(state.losses).float(), torch.stack(state.norms).float()]).tolist()
        bad = [i for i, (a, b) in enumerate(zip(losses, norms)) if not (math.isfinite(a) and math.isfinite(b))]
        row = {"step": step, "train_loss": sum(losses) / len(losses), "grad_norm": norms[-1],
               **{f"grad_norm.{k}": v for k, v in groups.items()}, "lr": self.opt.param_groups[0]["lr"],
               "tokens_per_s": state.intervals[-1][0] / seconds,
               "elapsed_s": state.elapsed + time.perf_counter() - began}
        state.losses, state.norms = [], []
        if bad:
            state.diverged_step = step - len(losses) + 1 + bad[0]
            state.step, state.done = state.diverged_step, True
        elif is_eval:
            state.last_eval = {"step": step, **self.evaluate()}
            row.update(state.last_eval)
            if state.solved_step is None and self.task.solved(state.last_eval):
                state.solved_step = step
            state.done = bool(t.early_stop and state.solved_step is not None)
        writer.metrics(row)
        progress.update(step, row)
        if not state.done and t.grad_profile_every and step % t.grad_profile_every == 0 and step != t.steps:
            writer.profiles(self.profile(step))

    # --- checkpoints --------------------------------------------------------------------------------------------
    def state_dict(self, state: LoopState, began: float) -> dict:
        """Everything a resumed run needs to continue bitwise: weights, optimiser, every RNG, the loop's state."""
        loop = dataclasses.asdict(state)
        loop["losses"], loop["norms"] = _stack(state.losses), _stack(state.norms)
        loop["elapsed"] = state.elapsed + time.perf_counter() - began
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "train_generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [], "loop": loop}

    def load_state_dict(self, ckpt: dict) -> LoopState:
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.gen.set_state(ckpt["train_generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt["cuda_rng"]:
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        loop = dict(ckpt["loop"])
        loop["losses"], loop["norms"] = list(loop["losses"].to(self.device)), list(loop["norms"].to(self.device))
        loop["intervals"] = [tuple(i) for i in loop["intervals"]]
        return LoopState(**loop)

    def summary(self, state: LoopState, test: dict[str, float] | None = None) -> dict:
        """The run's summary; `test` is the test set's scores of the final model (None for a diverged run, whose
        final values are all None: its weights hold non-finite numbers)."""
        steady = state.intervals[1:] or state.intervals  # the first interval holds warm-up (allocation, caches)
        tokens, seconds = (sum(v) for v in zip(*steady)) if steady else (0, 0.0)
        evals = {k: v for k, v in state.last_eval.items() if k != "step"}
        if test is None:  # the same fields, empty: test_<stat> for each eval_<stat> at the training length
            test = {"test_" + k.removeprefix("eval_"): None for k in evals if k.startswith("eval_") and "@" not in k}
        final = {**evals, **test}
        return {
            "status": "diverged" if state.diverged_step else "completed",
            "steps_done": state.step,
            "diverged_step": state.diverged_step,
            "final": {k: None for k in final} if state.diverged_step else final,
            "last_eval": state.last_eval,
            "solved_step": state.solved_step,
            "solved_criterion": self.task.solved_criterion,
            "tokens_per_s": tokens / seconds if seconds else None,
            "peak_mem_bytes": peak_memory(self.device),
            "peak_mem_kind": "cuda_max_allocated" if self.device.type == "cuda" else "process_peak_rss",
            "train_wall_s": state.elapsed,
            "kernel_path": self.model.kernel_path,  # after training: the path the training steps took
            "kernel": self.model.kernel,  # the same, structured: backend and fallback reason
            "grad_profile_note": self.model.profile_note,
        }


def valid_lengths(task) -> list[int]:
    """The lengths 1..task.length at which the task can be built (MQAR: even ones from 4·num_kv_pairs; induction:
    from 3), for training at lengths drawn uniformly up to the task's."""
    lengths = []
    for length in range(1, task.length + 1):
        try:
            dataclasses.replace(task, length=length)
        except ValueError:
            continue
        lengths.append(length)
    return lengths


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(values).cpu() if values else torch.zeros(0)


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak for this run: CUDA's allocator peak, or on Linux the process's peak RSS (VmHWM), which
    a sweep worker would otherwise carry over from earlier runs."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/status") as f:
            hwm = next(line for line in f if line.startswith("VmHWM:"))
        return int(hwm.split()[1]) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def settle_threads(cfg: RunConfig, run_dir: Path | None = None, default: int | None = None) -> RunConfig:
    """`cfg` with the CPU thread count it trains with, decided once: an unfinished run in `run_dir` keeps the count
    its config.json recorded when it first started (so it resumes bitwise, whatever the sweep's --workers now), else
    the config's own `threads`, else `default` (a sweep's share of the cores), else torch's current count."""
    recorded = None
    if run_dir is not None and (Path(run_dir) / CHECKPOINT).exists():
        with contextlib.suppress(OSError, ValueError):
            recorded = read_json(Path(run_dir) / "config.json").get("threads")
    threads = recorded or cfg.threads or default or torch.get_num_threads()
    return cfg if threads == cfg.threads else cfg.model_copy(update={"threads": threads})


def _plugin_record(name: str) -> dict | None:
    """provenance.model_plugin: which code a model from outside the package resolved to (never fails the run)."""
    try:
        return describe(name)
    except Exception as e:  # e.g. its source file unreadable: the run is still recorded, with the reason
        return {"name": name, "error": f"{type(e).__name__}: {e}"}


@contextlib.contextmanager
def run_environment(cfg: RunConfig):
    """The process-wide settings a run's bits depend on, for the run's duration only (a sweep worker runs many):
    the CPU thread count and, with `train.deterministic`, deterministic algorithms (cuBLAS workspace, cuDNN)."""
    threads = torch.get_num_threads()
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.train.deterministic:
        # cuBLAS reads this when a handle is made; set before the run's first matmul on a fresh device
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(flags[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1:]


def run_record(cfg: RunConfig, writer, progress: bool | None = None, ckpt: dict | None = None,
               stop: threading.Event | None = None, sink=None) -> dict:
    """Train `cfg` through `writer` (files, or memory on a Ray worker), from checkpoint `ckpt` if given, and return
    the summary. An exception becomes status `failed` with its traceback; only RunInterrupted escapes."""
    with run_environment(cfg):
        return _run_record(cfg, writer, progress, ckpt, stop, sink)


def _run_record(cfg, writer, progress, ckpt, stop, sink) -> dict:
    head = record_head(cfg)
    plugin = _plugin_record(cfg.model.name)
    started = time.perf_counter()
    try:
        trainer = Trainer(cfg)
        trainer.stop = stop or threading.Event()
        task = trainer.task
        head.update(params=sum(p.numel() for p in trainer.params), baseline_loss=task.baseline_loss,
                    chance_accuracy=task.chance_accuracy, no_binding_accuracy=task.no_binding_accuracy,
                    no_binding_loss=task.no_binding_loss, loss_label=task.loss_label,
                    accuracy_label=task.accuracy_label, accuracy_note=task.accuracy_note,
                    kernel_path=trainer.model.kernel_path, kernel=trainer.model.kernel, resumed_from_step=ckpt["loop"]["step"] if ckpt else None)
        state = trainer.load_state_dict(ckpt) if ckpt else None
        reset_peak_memory(trainer.device)
        with Progress(cfg.train.steps, cfg.run_id, enabled=progress, start=state.step if state else 0,
                      sink=sink) as bar:
            body = trainer.fit(writer, bar, state)
    except RunInterrupted:
        raise
    except Exception as e:  # recorded, never lost: the run is marked failed with its traceback
        body = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    body["wall_s"] = body.get("train_wall_s") or time.perf_counter() - started
    record = provenance(cfg.device)
    if plugin is not None:  # which code a model from outside the package resolved to
        record["model_plugin"] = plugin
    return {**head, **body, "config": cfg.canonical(), "provenance": record}


@contextlib.contextmanager
def stop_on_signals():
    """Turn SIGINT/SIGTERM into a stop request (checkpoint, then RunInterrupted) while the block runs."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def execute(cfg: RunConfig, out_dir: Path, progress: bool | None = None, force: bool = False,
            sink=None, threads: int | None = None) -> tuple[dict, Path]:
    """Run `cfg` into `out_dir/<run_id>/` and return (summary, run folder).

    A finished record is returned as it is (with `skipped`) unless `force`, in which case the new run is staged beside
    it and replaces it only once finished. An unfinished run resumes from its checkpoint. A run another process holds
    is not touched (status `busy`). SIGINT/SIGTERM checkpoint the run and raise RunInterrupted. The run computes
    with `cfg.threads` CPU threads, or `threads`, decided when it first starts and recorded (see `settle_threads`).
    """
    opened = open_run(out_dir, cfg, rerun=force)
    if isinstance(opened, Busy):
        return opened.outcome, Path(out_dir) / cfg.run_id
    if isinstance(opened, Skipped):
        return {**opened.summary, "skipped": True}, Path(out_dir) / cfg.run_id
    with opened:
        ckpt = opened.checkpoint()
        cfg = settle_threads(cfg, opened.run_dir if ckpt else None, threads)
        writer = RunWriter(opened.target, resume=ckpt)
        writer.config(cfg.canonical())
        with run_environment(cfg), stop_on_signals() as stop:
            writer.started(provenance(cfg.device))
            summary = _run_record(cfg, writer, progress, ckpt, stop, sink)  # already in the run's environment
        writer.summary(summary)
        opened.commit(writer)
    return summary, opened.run_dir
