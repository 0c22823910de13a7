"""Prints the JSON Schemas we publish:
`python -m cleanup_worker.adapters.cloudevents.schema [notice]`.

`docs/event-schema.json` (the membership event) and `docs/revocation-notice-schema.json` (the
notice) are this output; unit tests fail when they differ.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from cleanup_worker.adapters.cloudevents.binding import event_json_schema
from cleanup_worker.adapters.cloudevents.notices import notice_json_schema


def render(schema: dict[str, Any]) -> str:
    """Stable (sorted keys), so the checked-in copy diffs cleanly."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write the event's schema, or with `notice` the notice's, to stdout."""
    args = sys.argv[1:] if argv is None else argv
    wanted = args[0] if args else "event"
    schema = notice_json_schema() if wanted == "notice" else event_json_schema()
    sys.stdout.write(render(schema))


if __name__ == "__main__":
    main()
