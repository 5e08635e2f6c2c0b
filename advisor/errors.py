"""Errors the advisor reports as one sentence and exit status 2 (never a traceback)."""


class AdvisorError(Exception):
    """The advisor could not do its job; str(error) is the sentence shown to the user."""


class NetdataError(AdvisorError):
    """Netdata could not be asked, or its answer was unusable."""


class NetdataUnreachable(NetdataError):
    """Nothing answered at the URL (refused, no route, name not found)."""


class NetdataTimeout(NetdataError):
    """Netdata accepted the request but did not answer in time."""


class NetdataHTTPError(NetdataError):
    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class NetdataAuthRequired(NetdataHTTPError):
    """The agent refuses the call without a valid bearer token (v2's bearer protection)."""


class NetdataFormatError(NetdataError):
    """The answer was not the JSON shape Netdata 1.37+ gives."""


class NetdataVersionError(NetdataError):
    """The agent is older or newer than the versions whose API the advisor reads."""


class UnknownNode(NetdataError):
    """--node named a host the Netdata (parent) does not hold."""


class MissingEvidence(AdvisorError):
    """The source has none of the charts or files the diagnosis needs."""
