"""A Server-Sent Events reader (the WHATWG event-stream format) over lines of text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from clearft.models import StreamEvent

KEEPALIVE = "keep-alive"


def parse_sse(lines: Iterable[str]) -> Iterator[StreamEvent]:
    """Events from an event stream's lines (line endings removed). Comment lines (the server's
    heartbeats) come out as ``StreamEvent("keep-alive")`` so that a reader can check a deadline."""
    name, data, event_id = None, [], None
    for line in lines:
        if line == "":
            if name is not None or data:
                payload = json.loads("\n".join(data)) if data else {}
                yield StreamEvent(event=name or "message", data=payload, id=event_id)
            name, data, event_id = None, [], None
        elif line.startswith(":"):
            yield StreamEvent(event=KEEPALIVE)
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = int(value) if value.isdigit() else None
