"""Forking in a test: the child runs a function and its exit code comes back."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Callable


def exit_code_of_forked(child: Callable[[], int]) -> int:
    """Fork; the child runs ``child`` and exits with what it returns (1, its traceback printed in the test's
    output, if it raises); the parent waits and returns the child's exit code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a multi-threaded process
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child()
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
