"""Imported once by the local executor's fork server, so every worker it forks starts warm."""

import torch._dynamo  # noqa: F401  (torch.optim imports it on first use; seconds on a small CPU)

import seqbench.harness.executors  # noqa: F401
import seqbench.harness.train  # noqa: F401
