#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a GPU session: fills .gpu/ (git-ignored) with what the GPU machine lacks,
# to be carried with the call (carry: [".gpu"]).
#   - wheels of the harness's dependencies missing from the GPU image (pydantic and its own), for CPython 3.12 x86-64
#   - _build.py: the commit and dirty flag of this tree, so that records made there name the code that made them
# The GPU image already has torch, triton, numpy, pandas, pyarrow, seaborn, scipy, pyyaml, tqdm, jinja2, pytest,
# pytest-benchmark and pytest-timeout (see /work/.library/device/KINDS.md); ray is left out (its tests skip).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The versions this project's venv resolved, so that the GPU machine runs what CI ran.
VENV_PY=.venv/bin/python
version() { "$VENV_PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .gpu && mkdir -p .gpu/wheels
for dist in pydantic pydantic_core annotated_types typing_inspection typing_extensions; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/wheels "${dist//_/-}==$(version "$dist")"
done
commit=$(git rev-parse HEAD)
dirty=$([ -n "$(git status --porcelain -- . ':!results')" ] && echo True || echo False)
printf '"""Written by scripts/gpu_prepare.sh: the source tree sent to the GPU machine."""\n\ncommit = "%s"\ndirty = %s\n' \
    "$commit" "$dirty" > .gpu/_build.py
du -sh .gpu; ls .gpu/wheels
echo "commit $commit (dirty: $dirty); now run on the GPU machine, carrying .gpu:"
echo "  bash scripts/gpu_session.sh correct     # then:  bash scripts/gpu_session.sh measure"
