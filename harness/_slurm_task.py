"""What each array task of the `slurm` executor runs: submitit's job runner, then the exit the `seqbench` command
makes (`cli.exit_now`): threads waited for, exit handlers run, output flushed, and no teardown of torch's modules
(1.3-1.7 CPU-s a task on this project's machine, with the allocation still held).

submitit starts a task as `<python> -u -m submitit.core._submit FOLDER`; the executors are given
`<interpreter> -u -m seqbench.harness._slurm_task` as their `python`, so that FOLDER arrives here last. A task that
fails, or that submitit requeues (it exits through SystemExit), ends as submitit ends it."""

import sys

from submitit.core.submission import submitit_main

from .cli import exit_now


def main() -> None:
    sys.argv = [sys.argv[0], sys.argv[-1]]  # submitit's own parser reads FOLDER only
    submitit_main()
    exit_now(0)


if __name__ == "__main__":
    main()
