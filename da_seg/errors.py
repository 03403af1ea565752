"""The one exception family for mistakes a user can make (bad config, bad file, unknown name).

The CLI turns every `DasegError` into a one-line message and exit code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class DasegError(Exception):
    """A problem the user can fix: the message names the file or key and says what to do."""


class ConfigError(DasegError, ValueError):
    """A config value is missing, of the wrong type, out of range or unknown.

    Also a `ValueError`, so a component factory that checks its arguments raises it and plain Python callers that
    catch ``ValueError`` still work; `da_seg.registry.Registry.create` reports only these (and arguments that do not
    fit the signature) as config mistakes; any other exception from a factory is a bug and keeps its traceback.
    """


class DataError(DasegError):
    """An input file or folder is missing, unreadable or inconsistent."""


class StageNotBuiltError(DasegError):
    """A pipeline stage has no implementation yet; raised instead of pretending success."""


class ComponentError(DasegError):
    """A registered component (segmenter, loss, augmentation, ...) raised while in use, e.g. mid-training.

    The message names its kind, name and plugin; the original exception is chained (``raise ... from``), so
    ``daseg --debug`` shows the component's own traceback.
    """
