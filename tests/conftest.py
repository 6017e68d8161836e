import os

# Kernel tests run Triton through its interpreter on CPU; it must be set before triton is first imported.
if not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
