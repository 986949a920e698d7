"""`key=value` strings of `--run-config`, read as Flower reads them but with a message for each mistake.

Flower's parser finds `key=value` pairs with a regular expression, silently skips any text that is not one (so
`lora.r = 4`, with spaces, changes nothing), and rejects a repeated key or a bare string with one generic line. Here
the same pairs (values are TOML literals: quote strings) are read one at a time, so the message names the text it
could not read, the key given twice, or the value that is not a TOML literal.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from .parse import ConfigError

_PAIR = re.compile(r"""\s*([^\s=]+)=("[^"]*"|'[^']*'|\S+)""")
_FORM = 'write key=value pairs separated by spaces, strings in quotes, e.g. lora.r=4 strategy.name="fedprox"'


def parse_pairs(text: str) -> dict[str, Any]:
    """The pairs of one `--run-config` string, in order; a `ConfigError` names the first problem of each kind."""
    where = f"--run-config {text!r}"
    values: dict[str, Any] = {}
    problems: list[str] = []
    position = 0
    while position < len(text.rstrip()):
        match = _PAIR.match(text, position)
        if match is None:
            rest = text[position:].split()[0] if text[position:].split() else text[position:]
            problems.append(f"{where}: cannot read {rest!r} as key=value ({_FORM})")
            break
        name, literal = match.group(1), match.group(2)
        position = match.end()
        try:
            value = tomllib.loads(f"v = {literal}")["v"]
        except tomllib.TOMLDecodeError:
            if "=" in literal:
                hint = "separate pairs with spaces, not commas"
            else:
                hint = f'values are TOML literals: quote strings, e.g. {name}="{literal.strip(chr(39) + chr(34))}"'
            problems.append(f"{where}: cannot read the value of {name!r}, {literal} ({hint})")
            continue
        if name in values:
            problems.append(f"{where}: key {name!r} is given twice ({values[name]!r}, then {value!r}); give it once")
            continue
        values[name] = value
    if problems:
        raise ConfigError(problems)
    return values
