"""The one exception type for mistakes a user can fix (bad config, missing data, bad input).

The CLI prints a `UserError` as one line and exits non-zero without a traceback; any
other exception is a bug in shardrec and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: the message names the file, key or value."""
