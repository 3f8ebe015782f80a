"""The command line's error contract (docs/errors.md): what `run.py` prints when it stops.

- an error the user can fix (every class in `bstar_jax/core/errors.py`, or a config flag that
  does not parse): ONE line `error: <message>` on stderr, exit status 2; `--verbose` adds the
  traceback;
- Ctrl-C: one line saying that rerunning the same command resumes, exit status 130;
- SIGTERM (a preemption notice): the run stops at the next safe point, saves, and prints one
  line saying where it stopped and that rerunning the same command resumes, exit status 143;
- anything else is an internal error and keeps Python's traceback (exit status 1).
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import time
import traceback
from typing import Callable

from absl import app, flags

from bstar_jax.core.errors import UserError

USER_EXIT, INTERRUPT_EXIT, PREEMPTED_EXIT = 2, 130, 143
_VERBOSE = flags.DEFINE_bool("verbose", False, "On an error, print the traceback as well as the one-line message.")


def _preempted() -> type:
    from bstar_jax.core import preemption

    return preemption.Preempted


def _stop_together() -> None:
    """Every process stops at the same safe point: wait for the others, and let process 0 (the
    coordinator) leave last, so that no process sees it gone while it is still saving."""
    from bstar_jax.core import distributed

    try:
        distributed.barrier("stopped")
    except Exception:  # noqa: BLE001  a peer already gone: exit anyway
        return
    if distributed.process_count() > 1 and distributed.is_writer():
        time.sleep(1.0)


def one_line(message: str) -> str:
    """The message on one line (newlines joined with '; ')."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "(no message)"


def _stop(message: str, code: int, exc: BaseException | None = None) -> None:
    if exc is not None and _VERBOSE.present and _VERBOSE.value:
        traceback.print_exception(exc, file=sys.stderr)
    if message:
        sys.stderr.write(message + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit now: a normal interpreter shutdown would let library threads (orbax's async reads of a
    # damaged checkpoint) print their own tracebacks after the one line.
    os._exit(code)


def _flag_message(argv: list[str], error: Exception) -> str:
    """One line for a command line that does not parse: the unknown field and the closest known one."""
    text = str(error).replace("\\n", " ")
    suggestion = re.search(r'Did you mean "([\w.]+)"', text)
    for arg in argv[1:]:
        m = re.match(r"--config\.([\w.]+)", arg)
        if m and isinstance(error, (AttributeError, KeyError)) and re.search(
                rf"\b{re.escape(m.group(1).split('.')[-1])}\b", text):
            parent = m.group(1).split(".")[:-1]
            hint = f" (did you mean --config.{'.'.join(parent + [suggestion.group(1)])}?)" if suggestion else ""
            return f"--config.{m.group(1)}: unknown config field{hint}"
    if "Unknown command line flag" in text:
        name = re.search(r"flag '([^']+)'", text)
        known = difflib.get_close_matches(name.group(1), list(flags.FLAGS), n=1) if name else []
        hint = f" (did you mean --{known[0]}?)" if known else ""
        return f"unknown flag --{name.group(1) if name else '?'}{hint}"
    return one_line(text)


def _parse(argv: list[str]) -> list[str]:
    try:
        rest = flags.FLAGS(argv)
        if "config" in flags.FLAGS and flags.FLAGS["config"].value is not None:
            flags.FLAGS["config"].value.keys()  # ml_collections defers a config file's load error to here
        return rest
    except (OSError, SyntaxError) as e:  # the config file is missing or not Python
        given = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
        _stop(f"error: --config={given}: cannot load the config file ({one_line(e).split('; ')[-1]})", USER_EXIT, e)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        # ml_collections reports an unknown field as AttributeError and a broken config file as
        # whatever the file raised: both are the user's to fix.
        _stop("error: " + _flag_message(argv, e), USER_EXIT, e)
    except UserError as e:
        _stop("error: " + one_line(str(e)), USER_EXIT, e)


def _quiet_orphan_tasks(record) -> bool:
    """Drops asyncio's "Task exception was never retrieved" dumps: orbax reads a damaged checkpoint
    in background tasks whose error it also raises, and that error is reported as one line."""
    return (_VERBOSE.present and _VERBOSE.value) or "never retrieved" not in str(record.msg)


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)` with the error contract of this module's docstring."""

    def guarded(argv):
        logging.getLogger("asyncio").addFilter(_quiet_orphan_tasks)
        try:
            main(argv)
        except KeyboardInterrupt as e:
            _stop("interrupted: rerun the same command to resume from the last checkpoint", INTERRUPT_EXIT, e)
        except _preempted() as e:
            took = "" if e.asked_s is None else f", {e.asked_s:.1f} s after SIGTERM"
            sys.stderr.write(f"stopped at {e.where}{took}: the finished phases are saved; rerun the same "
                             f"command to resume\n")
            _stop_together()
            _stop("", PREEMPTED_EXIT)
        except UserError as e:
            _stop("error: " + one_line(str(e)), USER_EXIT, e)

    try:
        app.run(guarded, flags_parser=_parse)
    except KeyboardInterrupt as e:  # during flag parsing or imports
        _stop("interrupted: rerun the same command to resume from the last checkpoint", INTERRUPT_EXIT, e)
