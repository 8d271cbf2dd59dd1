"""charrnn: character-level recurrent language models, from the command line and from Python.

    import charrnn
    model = charrnn.load("checkpoints")
    print(model.generate(prime="ROMEO:", length=200, seed=1))

The Python API (`load`, `train`, `Model`, `TrainResult`: charrnn/api.py) is imported on first
use, so that `import charrnn`, and the CLI's --help and --version, stay fast and never import
torch. Errors are charrnn's own: `CharrnnError` and its subclasses.
"""

import warnings

from .errors import CharrnnError, CheckpointError, TrainingDiverged

# torch warns at import when NumPy is absent; charrnn never needs NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

__version__ = "0.1.0"

__all__ = ["CharrnnError", "CheckpointError", "Model", "TrainResult", "TrainingDiverged", "__version__", "load",
           "train"]

_LAZY = ("load", "train", "Model", "TrainResult")


def __getattr__(name: str):
    """The Python API, imported from charrnn.api (and torch) on first use (PEP 562)."""
    if name in _LAZY:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
