"""Rebuilds step.wasm from step.c: `python charrnn/export/wasm/build.py [--check]`.

The binary is built at development time and committed beside its source, so that neither
`charrnn export` nor its users need a WebAssembly toolchain; `--check` (and the tests)
rebuild it into a temporary file and compare, so the committed binary is always the
source's. Needs clang with the wasm32 target and wasm-ld (Debian: clang, lld).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE, BINARY = HERE / "step.c", HERE / "step.wasm"
FLAGS = ["--target=wasm32", "-msimd128", "-O3", "-nostdlib", "-fno-builtin", "-Wl,--no-entry", "-Wl,--export-all",
         "-Wl,--strip-all"]


def compiler() -> str | None:
    return shutil.which("clang")


def build(output: Path) -> None:
    """Compiles step.c to `output`; raises RuntimeError with clang's words if it fails."""
    clang = compiler()
    if clang is None:
        raise RuntimeError("no clang on PATH (apt-get install clang lld)")
    done = subprocess.run([clang, *FLAGS, "-o", str(output), str(SOURCE)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"clang failed: {done.stderr.strip()}")


def fresh_build() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "step.wasm"
        build(out)
        return out.read_bytes()


def main(argv: list[str]) -> int:
    if "--check" in argv:
        same = fresh_build() == BINARY.read_bytes()
        print("step.wasm matches step.c" if same else "step.wasm is stale: run charrnn/export/wasm/build.py")
        return 0 if same else 1
    BINARY.write_bytes(fresh_build())
    print(f"wrote {BINARY} ({BINARY.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
