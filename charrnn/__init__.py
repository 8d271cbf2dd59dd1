"""charrnn: character-level recurrent language models, from the command line and from Python.

    import charrnn
    model = charrnn.load("checkpoints")
    print(model.generate(prime="ROMEO:", length=200, seed=1))

The Python API (`load`, `train`, `Model`, `TrainResult`: charrnn/api.py) is imported on first
use, so that `import charrnn`, and the CLI's --help and --version, stay fast and never import
torch. Errors are charrnn's own: `CharrnnError` and its subclasses.
"""

import sys
import types
import warnings

from .errors import CharrnnError, CheckpointError, TrainingDiverged

# torch warns at import when NumPy is absent; charrnn never needs NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

__version__ = "0.1.0"

__all__ = ["CharrnnError", "CheckpointError", "Model", "TrainResult", "TrainingDiverged", "__version__", "load",
           "train"]

_LAZY = ("load", "Model", "TrainResult")  # and `train`: see _Package


def __getattr__(name: str):
    """`load`, `Model` and `TrainResult`, imported from charrnn.api (and torch) on first use (PEP 562)."""
    if name in _LAZY:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package's module type, for `charrnn.train`.

    `charrnn.train` is the API's function, but charrnn/train.py (the trainer) is a submodule of
    the same name, and importing it sets the package attribute `train` to the module, which a
    module `__getattr__` would never see past. A property on the module's type comes first:
    it gives the function, and its setter lets the import system's assignment pass (the
    submodule stays importable: `from charrnn.train import Trainer`).
    """

    @property
    def train(self):
        """charrnn.api.train (imported on first use)."""
        override = self.__dict__.get("_train_override")
        if override is not None:
            return override
        from .api import train

        return train

    @train.setter
    def train(self, value) -> None:
        if isinstance(value, types.ModuleType):
            return  # the import system recording the submodule charrnn/train.py
        self.__dict__["_train_override"] = value  # a test's monkeypatch, say

    @train.deleter
    def train(self) -> None:
        self.__dict__.pop("_train_override", None)


sys.modules[__name__].__class__ = _Package
