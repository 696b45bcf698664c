"""Typed errors. Each one names what was wrong and what is accepted, so the CLI, the app and
API clients can show it as is."""


class SERError(Exception):
    """Base class of every error this project raises on purpose."""


class AudioError(SERError, ValueError):
    """Audio that cannot be used: names the source and the problem."""

    def __init__(self, source, problem: str, accepted: str = ""):
        self.source = str(source)
        self.problem = problem
        self.accepted = accepted
        message = f"{self.source}: {problem}"
        if accepted:
            message += f" (accepted: {accepted})"
        super().__init__(message)


class UnreadableAudioError(AudioError):
    """The file does not exist or cannot be decoded as audio."""


class EmptyAudioError(AudioError):
    """The file decodes to zero samples."""


class SilentAudioError(AudioError):
    """Every sample is (near) zero: there is no speech to classify."""


class NonFiniteAudioError(AudioError):
    """NaN or infinite samples."""


class TooShortAudioError(AudioError):
    """Shorter than the minimum duration."""


class TooLongAudioError(AudioError):
    """Longer than the maximum duration a caller accepts."""


class CorpusError(SERError, ValueError):
    """A corpus folder that cannot be read (missing, empty, unknown corpus name)."""


class ParameterError(SERError, ValueError):
    """A parameter outside its accepted range or of the wrong kind."""


class ModelBundleError(SERError, ValueError):
    """A model bundle that is missing files, is inconsistent, or fails its ONNX parity check."""


class BusyError(SERError, RuntimeError):
    """The server has no room for this request now (a queue is full); try again later."""


class AttackCancelledError(SERError, RuntimeError):
    """The caller cancelled the attack; nothing more is computed for it."""


# How much of an untrusted value (a name, a path, a parameter) an error message shows.
EXCERPT_CHARS = 40


def excerpt(value, limit: int = EXCERPT_CHARS) -> str:
    """An untrusted value as an error message may show it: quoted and escaped (repr, with <, >
    and & as escapes too, so a page never renders it as markup), at most `limit` characters of
    it, and the length of the rest when it was cut. A 5 MB name stays a 60-character excerpt."""
    if isinstance(value, str):
        text, shown = value, repr(value[:limit])
    else:
        try:
            text = repr(value)
        except ValueError:  # an int of more digits than Python will print
            text = f"(an {type(value).__name__} too long to show)"
        shown = text[:limit]
    shown = shown.replace("&", "\\x26").replace("<", "\\x3c").replace(">", "\\x3e")
    return shown if len(text) <= limit else f"{shown}... ({len(text)} characters)"
