"""What one run of a sweep asks of a cluster: CPUs, GPUs and custom resources (Ray and SLURM alike), and the SLURM
job settings. Each comes from the sweep spec (`resources:`, `slurm:`) and can be overridden by flags; flags win.

Kept free of torch so the command line stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError


class Resources(BaseModel):
    """Per run. Unset CPUs mean the sweep's thread share (`threads`); unset GPUs mean 1 for device=cuda, else 0."""
    model_config = ConfigDict(extra="forbid")

    cpus: int | None = Field(None, ge=1, description="CPUs per run (default: the run's thread count)")
    gpus: float | None = Field(None, ge=0, description="GPUs per run (default: 1 on cuda, 0 on cpu)")
    custom: dict[str, float] = Field(default_factory=dict,
                                     description="Ray custom resources per run, name -> amount (e.g. {'A100': 1})")

    def cpus_for(self, threads: int) -> int:
        return self.cpus if self.cpus is not None else threads

    def gpus_for(self, device: str) -> float:
        return self.gpus if self.gpus is not None else (1.0 if device == "cuda" else 0.0)


class SlurmSettings(BaseModel):
    """One array job per sweep (submitit). `params` holds any further sbatch parameters by submitit's name
    (e.g. {'account': 'proj', 'qos': 'high', 'constraint': 'h100'})."""
    model_config = ConfigDict(extra="forbid")

    partition: str | None = Field(None, description="SLURM partition")
    time: int | None = Field(None, ge=1, description="time limit per run, minutes")
    array_parallelism: int | None = Field(None, ge=1, description="runs of the array at once (default: all)")
    params: dict[str, Any] = Field(default_factory=dict, description="further sbatch parameters, name -> value")


def _pair(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"{flag} {text!r}: expected NAME=VALUE")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The resource flags of `seqbench sweep` (Ray's and SLURM's alike)."""
    g = parser.add_argument_group("resources per run (Ray and SLURM; override the spec's `resources:`)")
    g.add_argument("--cpus-per-run", type=int, help="CPUs each run asks for (default: the run's thread count)")
    g.add_argument("--gpus-per-run", type=float, help="GPUs each run asks for (default: 1 on cuda, 0 on cpu)")
    g.add_argument("--resource", action="append", default=[], metavar="NAME=AMOUNT",
                   help="a Ray custom resource each run asks for; repeatable (default: none)")


def resolve_resources(spec_resources: Resources, args: argparse.Namespace) -> Resources:
    """The spec's `resources:` with the flags applied; validated (a bad value names its flag)."""
    data = spec_resources.model_dump()
    if getattr(args, "cpus_per_run", None) is not None:
        if args.cpus_per_run < 1:
            raise ConfigError(f"--cpus-per-run {args.cpus_per_run}: must be >= 1")
        data["cpus"] = args.cpus_per_run
    if getattr(args, "gpus_per_run", None) is not None:
        if not args.gpus_per_run >= 0:
            raise ConfigError(f"--gpus-per-run {args.gpus_per_run}: must be >= 0")
        data["gpus"] = args.gpus_per_run
    for text in getattr(args, "resource", None) or []:
        name, value = _pair(text, "--resource")
        try:
            amount = float(value)
        except ValueError:
            amount = float("nan")
        if not amount >= 0 or amount == float("inf"):
            raise ConfigError(f"--resource {text!r}: the amount must be a finite number >= 0")
        data["custom"][name] = amount
    return Resources.model_validate(data)


def resolve_slurm(spec_slurm: SlurmSettings, args: argparse.Namespace) -> SlurmSettings:
    """The spec's `slurm:` with the flags applied."""
    data = spec_slurm.model_dump()
    for flag, key in (("slurm_partition", "partition"), ("slurm_time", "time"),
                      ("slurm_array_parallelism", "array_parallelism")):
        value = getattr(args, flag, None)
        if value is not None:
            if key != "partition" and value < 1:
                raise ConfigError(f"--{flag.replace('_', '-')} {value}: must be >= 1")
            data[key] = value
    for text in getattr(args, "slurm_param", None) or []:
        key, value = _pair(text, "--slurm-param")
        data["params"][key] = value
    return SlurmSettings.model_validate(data)
