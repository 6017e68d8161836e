"""What a run comes back as: its status. A module of its own, with nothing to import, so that every layer (records,
executors, the tally, the report, the trackers) names statuses by this one enum."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """Every status a run can come back with, from `seqbench run` or an executor. Only the first three are written
    in a record (summary.json): they make it finished."""

    COMPLETED = "completed"
    DIVERGED = "diverged"  # a non-finite loss stopped it
    FAILED = "failed"  # its code raised, or its worker kept dying
    #: stopped by a signal to its worker alone (e.g. a SLURM task cancelled with scancel) and checkpointed: the next
    #: run of the sweep resumes it
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"  # recorded earlier: not run again
    BUSY = "busy"  # held by another process (another sweep on the same folder): not touched

    def __str__(self) -> str:
        return self.value


#: the statuses a record's summary.json holds
FINISHED = (Status.COMPLETED.value, Status.DIVERGED.value, Status.FAILED.value)
