"""A ClientApp mod: an exception inside the ClientApp becomes an error reply that says what kind of error it was,
not what it said.

Left to itself Flower sends `str(exception)` to the server (`"<class 'X'>:<'message'>"`), and exception messages can
quote site data: a data-file error quotes the line it could not parse, a tokenizer error the text it choked on. This
mod, the outermost of the ClientApp, catches every exception, logs it in full on the site (the site's operator
debugs from its own log) and replies with the exception's type and a fixed sentence. With `privacy.error-details =
true` the reply carries the exception's message too, except for data-file errors (`DataFormatError`), which carry the
file's name and the line number only, never the file's text.
"""

from __future__ import annotations

import logging
import re
from pathlib import PurePath

from flwr.app import Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from .data.files import DataFormatError
from .reply_contract import ERROR_DETAIL_CHARS

LOG = logging.getLogger(__name__)

FIXED_SENTENCE = "the ClientApp failed at this site; the site's log has the details"
_FILE_LINE = re.compile(r"^(?P<path>[^\n]*?):(?P<line>\d+):")


def error_reason(err: BaseException, details: bool) -> str:
    """What the server learns of a ClientApp exception."""
    kind = type(err).__name__
    if isinstance(err, DataFormatError):
        where = _FILE_LINE.match(str(err))
        if details and where:
            return f"{kind}: {PurePath(where['path']).name}:{where['line']}: a data file could not be read; the " \
                   "site's log has the details"
        return f"{kind}: a data file could not be read at this site; the site's log has the details"
    if not details:
        return f"{kind}: {FIXED_SENTENCE}"
    text = f"{kind}: {err}"
    return text if len(text) <= ERROR_DETAIL_CHARS else text[:ERROR_DETAIL_CHARS] + " [...]"


def error_reply_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run the ClientApp; turn any exception into an error reply without its text (see the module docstring)."""
    try:
        return call_next(msg, context)
    except Exception as err:  # every exception: the point is that none reaches Flower's own error reply
        LOG.exception("the ClientApp failed on a %s message", msg.metadata.message_type)
        details = context.run_config.get("privacy.error-details", False) is True
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=error_reason(err, details)),
                       reply_to=msg)
