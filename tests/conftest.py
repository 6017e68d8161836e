import os

# Kernel tests run Triton through its interpreter on CPU; it must be set before triton is first imported.
if not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Ray tests bind every Ray process to 127.0.0.1 (Ray's single-machine mode; read when ray is first imported, and by the
# Ray processes the tests start); the Ray tests check it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
