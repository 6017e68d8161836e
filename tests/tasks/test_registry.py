"""The task registry, and the Task contract every registered task must keep."""

import ast
import dataclasses
import pathlib
import sys

import pytest
import torch

from seqbench import tasks
from seqbench.tasks import TASKS, AddingTask, CopyTask, InductionTask, MQARTask, SelectiveCopyTask, Task, get_task
from seqbench.tasks.base import param

#: a short length every task accepts (MQAR needs an even length >= 4 * num_kv_pairs)
SHORT = {"mqar": 32}


def test_registry():
    assert TASKS == {"adding": AddingTask, "copy": CopyTask, "induction": InductionTask, "mqar": MQARTask,
                     "selective_copy": SelectiveCopyTask}
    task = get_task("copy", length=5, copy_len=2)
    assert isinstance(task, CopyTask) and (task.length, task.copy_len, task.n_symbols) == (5, 2, 8)
    assert get_task("adding") == AddingTask()


def test_unknown_task_lists_known_names():
    with pytest.raises(ValueError) as err:
        get_task("nope")
    assert str(err.value) == "unknown task 'nope'; known: adding, copy, induction, mqar, selective_copy"


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match=r"task\.lenght.*known: task\.length"):
        get_task("adding", lenght=10)


def test_bounds_apply_through_the_registry():
    with pytest.raises(ValueError, match=r"task\.length must be >= 1 \(got 0\)"):
        get_task("copy", length=0)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_contract(name):
    cls = TASKS[name]
    assert issubclass(cls, Task) and cls.name == name and cls.input_kind in ("tokens", "features")
    for f in cls.params():
        assert f.metadata["help"] and f.default is not dataclasses.MISSING, f.name
    task = cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(task, cls.params()[0].name, 3)
    x, y = task.sample(5, torch.Generator().manual_seed(0))
    if task.input_kind == "tokens":
        assert x.shape == (5, task.seq_len) and x.dtype == torch.long and 0 <= x.min() and x.max() < task.input_size
    else:
        assert x.shape == (5, task.seq_len, task.input_size) and x.dtype.is_floating_point
    out = torch.randn(5, task.seq_len, task.output_size, generator=torch.Generator().manual_seed(1))
    loss = task.loss(out, y)
    stats = task.eval_stats(out, y)
    assert loss.shape == () and torch.isfinite(loss)
    assert {"loss", "accuracy"} <= set(stats) and all(v.shape == (5,) for v in stats.values())
    torch.testing.assert_close(stats["loss"].mean(), loss)
    assert task.baseline_loss > 0 and isinstance(task.solved_criterion, str)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("name", sorted(TASKS))
def test_sample_on_device(name, device):
    task = get_task(name, length=SHORT.get(name, 9))
    a = task.sample(4, torch.Generator(device).manual_seed(0), device)
    b = task.sample(4, torch.Generator(device).manual_seed(0), device)
    assert all(t.device.type == device for t in a)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_tasks_import_only_torch_and_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"torch"}
    for path in pathlib.Path(tasks.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert set(roots) <= allowed, f"{path.name} imports {roots}"


def test_every_task_says_its_chance_accuracy_or_that_it_has_none():
    """Declared on Task (None by default), so the trainer reads it as an attribute and records it with every run."""
    assert Task.chance_accuracy.fget(AddingTask()) is None
    for name, cls in TASKS.items():
        chance = cls().chance_accuracy
        assert chance is None if name == "adding" else 0 < chance < 1, (name, chance)


def test_every_task_declares_its_length_and_the_words_reports_use():
    """`length` (what length generalisation varies) is a parameter of every task, and a task without one is refused
    when it is defined; each task names its loss and accuracy (and may note how accuracy is scored)."""
    for name, cls in TASKS.items():
        assert "length" in {f.name for f in dataclasses.fields(cls)}, name
        assert cls.loss_label != Task.loss_label and cls.accuracy_label != Task.accuracy_label, name
        assert isinstance(cls.accuracy_note, str) and cls.accuracy_note, name
    with pytest.raises(TypeError, match="declares no `length`"):
        @dataclasses.dataclass(frozen=True)
        class Lengthless(Task):
            name = "lengthless"
            n: int = param(1, "a parameter")
