"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""


class ClipsamError(Exception):
    """A problem with the user's input, files or environment; the message says what to do."""


class InputImageError(ClipsamError):
    """The image cannot be read."""


class VocabularyError(ClipsamError):
    """The vocabulary or a prompt class is invalid."""


class CheckpointError(ClipsamError):
    """A checkpoint is missing, corrupt, or belongs to another model."""


class DownloadError(ClipsamError):
    """A download failed or did not verify."""


class OutputPathError(ClipsamError):
    """An output cannot be written."""
