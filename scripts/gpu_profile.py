"""One forward+backward of one recurrent layer, bracketed for a profiler (ncu --profile-from-start off): the warm-up
(compilation, autotuning, cuDNN's plan) runs outside the bracket, so the report holds exactly one training step's
kernels. Used by scripts/gpu_session.sh (stage `profile`).

    python3 scripts/gpu_profile.py CELL BACKEND HIDDEN DTYPE [--batch 64] [--length 1024] [--no-tf32]
"""

import argparse

import torch

from seqbench.harness.bench import DTYPES, build, forward_backward, make_inputs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cell", choices=("rnn", "lstm", "gru", "mingru", "minlstm"))
    p.add_argument("backend", choices=("torch", "triton"))
    p.add_argument("hidden", type=int)
    p.add_argument("dtype", choices=tuple(DTYPES))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--no-tf32", action="store_true")
    a = p.parse_args()
    if a.no_tf32:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    state, x, w = make_inputs(a.cell, a.batch, a.length, a.hidden, "cuda", a.dtype)
    module = build(a.cell, a.backend, state, a.hidden, "cuda", DTYPES[a.dtype])
    x = x.to(DTYPES[a.dtype])
    for _ in range(3):
        forward_backward(module, x, w)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    forward_backward(module, x, w)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    print(f"profiled {a.cell} {a.backend} H={a.hidden} {a.dtype}: path {getattr(module, 'last_path', '-')}")


if __name__ == "__main__":
    main()
