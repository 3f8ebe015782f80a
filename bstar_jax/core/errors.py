"""Every error the user can fix, in one place: a bad config, data file, model, checkpoint or
workdir, or a run that diverged. `run.py` prints such an error's message as one line and exits
with status 2 (docs/errors.md); anything else is an internal error and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix. The message is one line: what is wrong, where, what to do."""


class ConfigValueError(UserError, ValueError):
    """A config field out of range, of the wrong type or naming something unknown."""


class ConfigChangedError(UserError):
    """A rerun whose config differs from the one that made the workdir."""


class ConfigError(UserError, ValueError):
    """A model config (config.json, GGUF metadata) that this decoder cannot represent."""


class ModelNotFoundError(UserError, FileNotFoundError):
    """No model where the path points (file, folder, alias or reachable hub id)."""


class CheckpointError(UserError, RuntimeError):
    """A model folder, model file or run checkpoint that is missing, damaged, of another model, or
    that cannot be written (a full disk)."""


class DataError(UserError, ValueError):
    """Missing or malformed data; the message names the file and line (or item) at fault."""


class BatchError(UserError, ValueError):
    """A batch that cannot be built: sizes that do not fit the mesh, examples that do not fit."""


class TrainingError(UserError):
    """Training stopped; the message names the phase, the step and what was out of range."""


class NonFiniteError(TrainingError, FloatingPointError):
    """A step's loss or gradient norm was NaN/inf; that step's update was not applied."""


class DivergenceError(TrainingError):
    """The loss or the weight norm left its running range (TrainSpec's diverge_* rules)."""
