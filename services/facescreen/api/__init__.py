"""The operator's HTTP API: alerts and their review, watchlists, enrolment, search, audit.

`create_app(ApiContext(...))` builds the FastAPI app; see `facescreen.api.context` for
what it is built from and `facescreen.api.auth` for tokens and roles.
"""

from facescreen.api.app import PREFIX, create_app
from facescreen.api.broadcast import AlertBroadcaster, ingest_and_publish
from facescreen.api.context import ApiContext, ApiLimits

__all__ = ["PREFIX", "AlertBroadcaster", "ApiContext", "ApiLimits", "create_app",
           "ingest_and_publish"]
