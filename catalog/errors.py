"""The one base of every error a person can act on.

Each surface shows a `UserError`'s message as it is (a line on stderr with exit status 2, a chat
reply, an HTTP answer) and never a traceback; any other exception is a bug and shows one."""


class UserError(ValueError):
    """A failure whose message says what happened and what to do about it."""


__all__ = ["UserError"]
