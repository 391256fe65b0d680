# Copyright (c) monai_bigan contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Tracebacks of the MONAI Label app go to its error log (``<app_dir>/logs/errors.log``), which no endpoint serves.

MONAI Label shows clients the last output lines of the training process (``GET /train/``) and the server log
(``GET /logs/``). Once :py:meth:`ErrorLog.install` ran in a process (the server and each task process), a log record
that carries a traceback (``logger.exception``, ``exc_info``, a message quoting one) is written in full to the
error log and goes on to the other handlers as its first line and a reference::

    ... - Engine run is terminating due to exception: boom [traceback in errors.log, ref 3f2a9c1e]

Uncaught exceptions (main thread, other threads, unraisable ones) are reported the same way instead of printing
their traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["ERROR_LOG_NAME", "ErrorLog", "first_line"]

ERROR_LOG_NAME = "errors.log"
_TRACEBACK_MARKERS = ("Traceback (most recent call last)", "Stack (most recent call last)")
_MAX_LINE = 300

logger = logging.getLogger(__name__)


def first_line(text: Any) -> str:
    """The first non-empty line of ``text``, at most 300 characters."""
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 3] + "..."


def _summary(exc: BaseException) -> str:
    """One line saying what went wrong: an HTTPException's detail, else the exception's type and first line."""
    detail = getattr(exc, "detail", None)
    if isinstance(detail, str):
        return first_line(detail)
    message = first_line(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class ErrorLog:
    """
    The app's error log, and the diversion of this process's tracebacks to it.

    Args:
        path: the error log file; its folder is created when missing.
    """

    _installed: ErrorLog | None = None

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._handler = logging.FileHandler(self.path, encoding="utf-8", delay=True)
        self._handler.setFormatter(
            logging.Formatter("[%(asctime)s] [%(process)s] [%(levelname)s] (%(name)s:%(lineno)d) - %(message)s")
        )
        self._saved: tuple[Any, Any, Any, Any] | None = None
        self._previous: ErrorLog | None = None

    @classmethod
    def for_app(cls, app_dir: str | os.PathLike) -> ErrorLog:
        """The error log of the app in ``app_dir``, beside MONAI Label's ``logs/app.log``."""
        return cls(Path(app_dir) / "logs" / ERROR_LOG_NAME)

    def write(self, record: logging.LogRecord) -> str:
        """Writes ``record`` in full (message, traceback) to the error log; returns the reference of the entry."""
        ref = uuid.uuid4().hex[:8]
        entry = logging.makeLogRecord(dict(record.__dict__))
        entry.msg, entry.args = f"[ref {ref}] {self._message(record)}", ()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handler.handle(entry)
        return ref

    def report(self, log: logging.Logger, message: str, exc: BaseException) -> str:
        """
        Logs ``message`` and ``exc`` to ``log`` as one line and the traceback to the error log; returns its reference.
        """
        file_name, line, function, _ = log.findCaller(stacklevel=2)  # the caller of report, for the entry
        record = log.makeRecord(log.name, logging.ERROR, file_name, line, message, (), None, function)
        record.exc_info = (type(exc), exc, exc.__traceback__)
        ref = self.write(record)
        log.error(f"{message}: {_summary(exc)} [traceback in {ERROR_LOG_NAME}, ref {ref}]")
        return ref

    def install(self) -> None:
        """
        Diverts the tracebacks of this process to this error log. An error log installed earlier steps aside until
        this one is uninstalled.
        """
        if ErrorLog._installed is self:
            return
        previous = ErrorLog._installed
        if previous is not None:
            previous._restore()
            self._previous = previous
        self._saved = (logging.getLogRecordFactory(), sys.excepthook, threading.excepthook, sys.unraisablehook)
        logging.setLogRecordFactory(self._make_record)
        sys.excepthook = self._uncaught
        threading.excepthook = self._uncaught_in_thread
        sys.unraisablehook = self._uncaught_in_thread
        ErrorLog._installed = self

    def uninstall(self) -> None:
        """Restores the record factory and exception hooks saved by :py:meth:`install`, and the earlier error log."""
        self._restore()
        self._handler.close()
        if ErrorLog._installed is self:
            ErrorLog._installed = None
            previous, self._previous = self._previous, None
            if previous is not None:
                previous.install()

    def _restore(self) -> None:
        if self._saved is not None:
            logging.setLogRecordFactory(self._saved[0])
            sys.excepthook, threading.excepthook, sys.unraisablehook = self._saved[1:]
            self._saved = None

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        try:
            return record.getMessage()
        except Exception:  # a bad format string must not lose the entry
            return str(record.msg)

    def _make_record(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        factory = self._saved[0] if self._saved is not None else logging.LogRecord
        return self._divert(factory(*args, **kwargs))

    def _uncaught_in_thread(self, hook_args: Any) -> None:
        """``threading.excepthook`` and ``sys.unraisablehook``: their arguments hold the exception."""
        self._uncaught(hook_args.exc_type, hook_args.exc_value, hook_args.exc_traceback)

    def _divert(self, record: logging.LogRecord) -> logging.LogRecord:
        message = self._message(record)
        if not (record.exc_info or record.stack_info or any(m in message for m in _TRACEBACK_MARKERS)):
            return record
        ref = self.write(record)
        record.msg, record.args = f"{first_line(message)} [traceback in {ERROR_LOG_NAME}, ref {ref}]", ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return record

    def _uncaught(self, exc_type: type[BaseException], exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            return
        if isinstance(getattr(exc, "detail", None), str) and hasattr(exc, "status_code"):
            # an HTTPException of the app: its detail is the message, any traceback was reported already
            logger.error(first_line(exc.detail))  # type: ignore[attr-defined]
            return
        # the record factory turns the traceback into a one-line entry with its reference
        logger.error(_summary(exc), exc_info=(exc_type, exc, tb))
