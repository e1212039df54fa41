class PlatformError(Exception):
    """A refused or failed platform operation; the message says what to fix.

    Every app's own error base derives from it, so one command base and one API error handler
    turn any of them into a clear message.
    """
