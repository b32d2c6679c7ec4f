"""The one exception type that carries a message meant for the user.

Bad input (a missing file, a corrupt dataset, an impossible option) raises `GenlabError` with a
sentence that names the problem and the fix. The CLI prints that sentence and exits non-zero;
anything else that escapes is a bug and keeps its traceback.
"""


class GenlabError(Exception):
    """A problem the user can fix; `str(err)` says what and how."""
