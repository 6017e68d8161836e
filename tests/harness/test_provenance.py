import json

import torch

from seqbench.harness.provenance import cpu_identity, identity, parse_cpuinfo, provenance

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
stepping\t: 8
flags\t\t: fpu sse2 avx2 avx fma avx512f avx512_bf16 amx_tile sha_ni

processor\t: 1
vendor_id\t: SomethingElse
"""
ARM = """processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd evtstrm sve i8mm bf16 svebf16
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""
FIELDS = {"arch": str, "vendor_id": str, "family": int, "model": int, "stepping": int, "model_name": str,
          "flags_sha256": str, "isa": list, "physical_cores": int, "logical_cpus": int, "torch_capability": str,
          "blas": str, "mkl": str, "onednn": str, "dispatch_env": dict}


def test_provenance_records_the_cpu_identity_with_its_types():
    cpu = provenance("cpu")["cpu"]
    assert set(cpu) == set(FIELDS)
    for key, kind in FIELDS.items():
        assert cpu[key] is None or isinstance(cpu[key], kind), (key, cpu[key])
    assert cpu["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["flags_sha256"] is None or len(cpu["flags_sha256"]) == 16 and int(cpu["flags_sha256"], 16) >= 0
    assert all(isinstance(f, str) for f in cpu["isa"])
    assert json.loads(json.dumps(cpu)) == cpu  # JSON as it is recorded


def test_the_cpu_identity_is_read_once_and_a_record_cannot_change_it():
    assert cpu_identity() is cpu_identity()
    first = provenance("cpu")
    first["cpu"]["isa"].append("made-up")
    first["cpu"]["model"] = -1
    assert provenance("cpu")["cpu"] == cpu_identity() and "made-up" not in cpu_identity()["isa"]


def test_x86_identity_from_cpuinfo():
    cpu = identity(parse_cpuinfo(X86))
    assert (cpu["vendor_id"], cpu["family"], cpu["model"], cpu["stepping"]) == ("GenuineIntel", 6, 143, 8)
    assert cpu["model_name"] == "Intel(R) Xeon(R) Platinum 8480+"  # the first processor's, not the second's
    assert cpu["isa"] == ["amx_tile", "avx", "avx2", "avx512_bf16", "avx512f", "fma"]
    shuffled = X86.replace("fpu sse2 avx2", "avx2 sse2 fpu")
    assert identity(parse_cpuinfo(shuffled))["flags_sha256"] == cpu["flags_sha256"]
    one_more = X86.replace("sha_ni", "sha_ni vaes")
    assert identity(parse_cpuinfo(one_more))["flags_sha256"] != cpu["flags_sha256"]


def test_arm_identity_from_cpuinfo_and_none_where_nothing_is_known():
    cpu = identity(parse_cpuinfo(ARM))
    assert (cpu["vendor_id"], cpu["family"], cpu["model"], cpu["stepping"]) == ("0x41", 8, 0xD40, 1)
    assert cpu["isa"] == ["asimd", "bf16", "i8mm", "sve", "svebf16"] and cpu["model_name"] is None
    bare = identity(parse_cpuinfo(""))
    assert {k: bare[k] for k in ("vendor_id", "family", "model", "flags_sha256")} == dict.fromkeys(
        ("vendor_id", "family", "model", "flags_sha256"))
    assert bare["isa"] == [] and bare["torch_capability"] == torch.backends.cpu.get_cpu_capability()


def test_dispatch_overrides_are_recorded(monkeypatch):
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    env = identity({})["dispatch_env"]
    assert env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2" and "ATEN_CPU_CAPABILITY" not in env
