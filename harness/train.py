"""One training run: build task, model and optimiser from a resolved config, train, evaluate, profile, record."""

from __future__ import annotations

import contextlib
import hashlib
import math
import resource
import time
import traceback
from pathlib import Path

import torch

from .config import RunConfig
from .gradprofile import gradient_profile
from .progress import Progress
from .provenance import provenance
from .records import RunWriter, is_finished, read_summary, replace_dir

EVAL_CHUNK = 256  # fixed so results never depend on how evaluation is batched


def derive_seed(seed: int, stream: str) -> int:
    """Independent, stable seeds for the train/eval/profile data streams of one data seed."""
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


class Trainer:
    """The live state of a run. `step()` is the whole training step (what the benchmark times)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.task = cfg.task.build()
        torch.manual_seed(cfg.seed)  # model initialisation only; data has its own generators
        self.model = cfg.model.build(self.task).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.groups = self.model.param_groups()
        self.opt = make_optimizer(cfg, self.params)
        self.gen = self._generator("train")
        self.eval_set = self.task.sample(cfg.train.eval_size, self._generator("eval"), self.device)
        self.profile_batch = self.task.sample(cfg.train.grad_profile_batch, self._generator("profile"), self.device)
        self.max_norm = cfg.train.clip if cfg.train.clip > 0 else math.inf
        self.tokens_per_step = cfg.train.batch_size * self.task.seq_len
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.dtype == "bfloat16"
                         else contextlib.nullcontext())

    def _generator(self, stream: str) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(derive_seed(self.cfg.data_seed, stream))

    def step(self, group_norms: bool = False):
        """One optimiser step on a fresh batch -> (loss, grad norm before clipping, {group: norm} or None)."""
        x, y = self.task.sample(self.cfg.train.batch_size, self.gen, self.device)
        with self.autocast:
            loss = self.task.loss(self.model(x), y)
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
        self.model.eval()
        x, y = self.eval_set
        parts: dict[str, list[torch.Tensor]] = {}
        for i in range(0, len(x), EVAL_CHUNK):
            with self.autocast:
                out = self.model(x[i:i + EVAL_CHUNK])
            for k, v in self.task.eval_stats(out.float(), y[i:i + EVAL_CHUNK]).items():
                parts.setdefault(k, []).append(v)
        self.model.train()
        return {f"eval_{k}": torch.cat(v).mean().item() for k, v in parts.items()}

    def profile(self, step: int) -> list[dict]:
        return gradient_profile(self.model, self.task, self.profile_batch, self.cfg.train.grad_profile_dtype, step)

    def fit(self, writer: RunWriter, progress: Progress) -> dict:
        """Train to the end (or divergence, or early stop), writing metrics and profiles as it goes."""
        t, start = self.cfg.train, time.perf_counter()
        writer.profiles(self.profile(0))
        last_eval = {"step": 0, **self.evaluate()}
        writer.metrics(last_eval)
        solved_step = 0 if self.task.solved(last_eval) else None
        diverged_step, step = None, 0
        intervals: list[tuple[int, float]] = []  # (tokens, seconds) of training steps alone, per logged interval
        losses, norms = [], []
        tick = time.perf_counter()
        for step in range(1, t.steps + 1):
            is_eval = step == t.steps or (t.eval_every and step % t.eval_every == 0)
            is_row = is_eval or step % t.log_every == 0
            loss, norm, groups = self.step(group_norms=is_row)
            losses.append(loss)
            norms.append(norm)
            if not is_row:
                continue
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - tick
            intervals.append((len(losses) * self.tokens_per_step, seconds))
            values = torch.stack([torch.stack(losses).float(), torch.stack(norms).float()]).tolist()
            bad = [i for i, (a, b) in enumerate(zip(*values)) if not (math.isfinite(a) and math.isfinite(b))]
            if bad:
                diverged_step = step - len(losses) + 1 + bad[0]
            row = {"step": step, "train_loss": sum(values[0]) / len(losses), "grad_norm": values[1][-1],
                   **{f"grad_norm.{k}": v for k, v in groups.items()}, "lr": self.opt.param_groups[0]["lr"],
                   "tokens_per_s": intervals[-1][0] / seconds, "elapsed_s": time.perf_counter() - start}
            if is_eval and not bad:
                last_eval = {"step": step, **self.evaluate()}
                row.update(last_eval)
                if solved_step is None and self.task.solved(last_eval):
                    solved_step = step
            writer.metrics(row)
            progress.update(step, row)
            if bad:
                step = diverged_step
                break
            if t.grad_profile_every and step % t.grad_profile_every == 0 and step != t.steps:
                writer.profiles(self.profile(step))
            if is_eval and t.early_stop and solved_step is not None:
                break
            losses, norms = [], []
            tick = time.perf_counter()
        if diverged_step is None:
            writer.profiles(self.profile(step))
        return self.summary(step, last_eval, solved_step, diverged_step, intervals, time.perf_counter() - start)

    def summary(self, step, last_eval, solved_step, diverged_step, intervals, wall_s) -> dict:
        steady = intervals[1:] or intervals  # the first interval holds warm-up (allocation, caches, autotuning)
        tokens, seconds = (sum(v) for v in zip(*steady)) if steady else (0, 0.0)
        evals = {k: v for k, v in last_eval.items() if k != "step"}
        return {
            "status": "diverged" if diverged_step else "completed",
            "steps_done": step,
            "diverged_step": diverged_step,
            "final": {k: None for k in evals} if diverged_step else evals,
            "last_eval": last_eval,
            "solved_step": solved_step,
            "solved_criterion": self.task.solved_criterion,
            "tokens_per_s": tokens / seconds if seconds else None,
            "peak_mem_bytes": peak_memory(self.device),
            "peak_mem_kind": "cuda_max_allocated" if self.device.type == "cuda" else "process_max_rss",
            "wall_s": wall_s,
        }


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def execute(cfg: RunConfig, out_dir: Path, progress: bool | None = None, force: bool = False) -> tuple[dict, Path]:
    """Run `cfg` into `out_dir/<run_id>/` and return (summary, run folder). A finished record is returned as it is
    unless `force`, in which case the new run is staged beside it and replaces it only once it has finished."""
    run_dir = Path(out_dir) / cfg.run_id
    if is_finished(run_dir) and not force:
        return {**read_summary(run_dir), "skipped": True}, run_dir
    staged = run_dir.with_name(f".{cfg.run_id}.staging") if is_finished(run_dir) else run_dir
    writer = RunWriter(staged)
    writer.config(cfg.canonical())
    head = {"run_id": cfg.run_id, "task": cfg.task.name, "model": cfg.model.name,
            "backend": getattr(cfg.model, "backend", "torch"), "seed": cfg.seed, "data_seed": cfg.data_seed}
    started = time.perf_counter()
    try:
        trainer = Trainer(cfg)
        head.update(params=sum(p.numel() for p in trainer.params), baseline_loss=trainer.task.baseline_loss,
                    kernel_path=trainer.model.kernel_path)
        if cfg.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with Progress(cfg.train.steps, cfg.run_id, enabled=progress) as bar:
            body = trainer.fit(writer, bar)
    except Exception as e:  # recorded, never lost: the run is marked failed with its traceback
        body = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                "wall_s": time.perf_counter() - started}
    summary = {**head, **body, "config": cfg.canonical(), "provenance": provenance(cfg.device)}
    writer.summary(summary)
    if staged != run_dir:
        replace_dir(staged, run_dir)
    return summary, run_dir
