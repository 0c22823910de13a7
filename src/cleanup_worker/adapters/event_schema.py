"""Prints the JSON Schema of the membership event: `python -m cleanup_worker.adapters.event_schema`.

The checked-in `docs/event-schema.json` is this output; a unit test fails when they differ.
"""

from __future__ import annotations

import json
import sys

from cleanup_worker.adapters.cloudevents import event_json_schema


def main() -> None:
    """Write the schema to stdout, stable (sorted keys) so the checked-in copy diffs cleanly."""
    sys.stdout.write(json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
