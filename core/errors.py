"""Errors with messages meant for the person using the tool.

Every problem a user can cause (a bad config, a missing checkpoint, a dataset that does not
match the model) raises a subclass of :class:`UserFacingError`; the CLI prints its message and
the dashboard shows it in an error panel, and nothing else stops working.
"""

from __future__ import annotations

__all__ = [
    "ClassCountMismatchError",
    "ConfigError",
    "DatasetError",
    "ImageRefusedError",
    "ModelLoadError",
    "UserFacingError",
    "reason_of",
]


class UserFacingError(Exception):
    """A problem with the user's input, with a message that says what to fix."""


class ConfigError(UserFacingError):
    """The project config is missing, malformed or names something invalid."""


class ModelLoadError(UserFacingError):
    """A model could not be built or its checkpoint could not be loaded."""


class DatasetError(UserFacingError):
    """A test set could not be read (empty, bad manifest, path outside its root...)."""


class ImageRefusedError(UserFacingError):
    """One image of a dataset is not read (missing, not a regular file, linked outside the
    folders its dataset allows, or too large); the rest of the dataset is unaffected."""


class ClassCountMismatchError(UserFacingError):
    """The model's number of outputs differs from the dataset's number of classes."""


def reason_of(exc: BaseException) -> str:
    """Why something failed, in one line: a user-facing error's own words, else the
    exception's type and message (e.g. a decoder's ``OSError``)."""
    if isinstance(exc, UserFacingError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
