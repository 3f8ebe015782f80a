"""Errors that are the user's to fix: a bad config, data file, model, checkpoint or workdir, or a
run that diverged. `run.py` prints such an error's message as one line and exits with status 2;
anything else is an internal error and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix. The message is one line: what is wrong, where, what to do."""
