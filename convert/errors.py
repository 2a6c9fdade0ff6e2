"""The workstation's errors, under edgeemo's one base (``edgeemo.errors.EdgeemoError``): train, study,
evaluate and convert raise these, and only the CLI turns them into a message and an exit status.

    EdgeemoError
    └── WorkstationError          exit 1: a workstation command cannot go on
        ├── MissingExtra          TensorFlow (the [train] extra) is not installed
        ├── OptionError           an option's value does not fit (the recipe, the data, the other options)
        ├── DataSetError          the data set cannot give what the command needs
        └── ModelFileError        a model file given to --init or --teacher cannot be used
            └── LayersDoNotFit    its layers are not those of the recipe it was read as
"""
from __future__ import annotations

from edgeemo.errors import EdgeemoError


class WorkstationError(EdgeemoError):
    exit_code = 1


class MissingExtra(WorkstationError):
    def __init__(self, what: str = "this command"):
        super().__init__(f"{what} needs TensorFlow, which is not installed here. "
                         "Install the workstation extra: pip install 'edgeemo[train]'")


class OptionError(WorkstationError, ValueError):
    pass


class DataSetError(WorkstationError, ValueError):
    pass


class ModelFileError(WorkstationError):
    pass


class LayersDoNotFit(ModelFileError):
    """The file's convolution and dense layers are not those of the recipe it was read as."""
