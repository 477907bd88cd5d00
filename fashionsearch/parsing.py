"""Reading untrusted text, the same way in the gateway's HTTP API and the indexer's manifests: whole numbers and
JSON. Every way the text can be bad ends as a ValueError whose message a person understands."""

from __future__ import annotations

import json
from typing import Any

_INT64 = (-(2**63), 2**63 - 1)


def parse_int(value: Any, what: str, minimum: int = _INT64[0], maximum: int = _INT64[1]) -> int:
    """A whole number from JSON, a query string, a form field or a manifest, read strictly: an int (not a bool),
    or text made of the ASCII digits 0-9 with an optional leading '-' and nothing else, so that '1_580', ' 1580',
    '1580 ', '+1580', '1580.0' and other scripts' digits (Python's int() takes them all) are refused, as the gRPC
    API refuses anything but an integer.  ValueError names `what` and the allowed range."""
    if isinstance(value, str):
        digits = value[1:] if value.startswith("-") else value
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError(f"{what} must be an integer written with the digits 0-9, got {_shown(value)}")
        if len(digits.lstrip("0")) > 19:  # beyond int64 whatever the digits; also spares int() a huge string
            raise ValueError(f"{what} must be between {minimum} and {maximum}, got {_shown(value)}")
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise ValueError(f"{what} must be an integer, got {_shown(value)}")
    if not minimum <= number <= maximum:
        raise ValueError(f"{what} must be between {minimum} and {maximum}, got {_shown(number)}")
    return number


def parse_json(text: str | bytes) -> Any:
    """JSON, with every way it can be bad as a ValueError: syntax, text that is not UTF-8, a number of more than
    4,300 digits (Python's int limit, which json raises as a bare ValueError) and nesting deeper than the
    recursion limit (a RecursionError from the C decoder)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as bad:
        raise ValueError(f"not valid JSON ({bad})") from None
    except UnicodeDecodeError:
        raise ValueError("not valid JSON (not UTF-8 text)") from None
    except ValueError:
        raise ValueError("JSON with a number of more than 4300 digits, which is refused") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply, which is refused") from None


def check_text(value: str, what: str) -> str:
    """`value` when it is text UTF-8 can carry. JSON's escapes let a client send a lone surrogate ("\\ud800"), which
    Python's json reads into a str that no store, protobuf message or UTF-8 log can write; ValueError names `what`."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as bad:
        raise ValueError(
            f"{what} is not valid Unicode text: it holds a lone surrogate ({ascii(value[bad.start])}) at character"
            f" {bad.start}"
        ) from None
    return value


def _shown(value: Any) -> str:
    """`value` for an error message, cut short: a client may send a number of thousands of digits."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"a {value.bit_length()}-bit integer"
    text = repr(value) if value is None or isinstance(value, (str, int, float)) else type(value).__name__
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"
