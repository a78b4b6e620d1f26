"""The one error type users see as a single line: a bad setting, name or file, with the fix.

Example: rnnbench train --task nope --arch lstm   # rnnbench: unknown task 'nope'; valid: mnist, addition, ...

``rnnbench``'s main prints a ``ConfigError`` as one line and exits 2, having written nothing. Every module that
refuses input raises it or a subclass, so the rule lives here once.
"""


class ConfigError(ValueError):
    """A bad setting; the message is one line naming the problem and the fix."""
