"""`charrnn.trace`, the public face of charrnn/inspect/trace.py and features.py: what a model makes of a text,
character by character (`trace`, as `Model.trace` returns it: a `Trace`), and the units that
track a feature (`rank_units`, `builtin_features`, `regex_feature`)."""

from .inspect.features import BUILTIN_FEATURES, UnitScore, builtin_features, rank_units, regex_feature
from .inspect.trace import Trace, trace

__all__ = ["BUILTIN_FEATURES", "Trace", "UnitScore", "builtin_features", "rank_units", "regex_feature", "trace"]
