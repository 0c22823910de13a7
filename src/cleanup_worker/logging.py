"""structlog, configured once: JSON lines for machines, colours for people."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "console", "auto"]


def configure_logging(log_format: LogFormat = "auto", level: str = "info") -> None:
    # Logs go to stderr so that a command's summary (table or --json) owns stdout.
    stream = sys.stderr
    use_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if use_json:
        processors.append(structlog.processors.dict_tracebacks)
    processors.append(renderer)
    _route_library_logs(stream, renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


# The one handler we put on the standard library's root logger (replaced on reconfiguration).
_library_handler: logging.Handler | None = None


def _route_library_logs(stream: TextIO, renderer: structlog.typing.Processor) -> None:
    """The libraries' own warnings (aiokafka's, asyncpg's) as our lines: same renderer,
    `module` naming their logger. Without a handler Python prints them bare on stderr, and a
    bare line breaks every JSON log pipeline. Below WARNING they are chatter.

    A library's `exc_info` becomes `exception`, the formatted text of the exception and its
    traceback; left as it is, the renderer would write the tuple's reprs ("<traceback object
    at 0x…>"), which say nothing."""
    global _library_handler  # noqa: PLW0603 - one process, one root logger
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _module_from_logger_name,
                structlog.processors.format_exc_info,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    if _library_handler is not None:
        root.removeHandler(_library_handler)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    _library_handler = handler


def _module_from_logger_name(
    _: Any, __: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict["module"] = record.name
    return event_dict


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger whose every line names the module that wrote it (`module`: pass `__name__`).

    Bound as a value rather than passed as the logger's name: the print factory we use drops
    names, and a value survives every renderer.
    """
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(module=name)
    return logger
