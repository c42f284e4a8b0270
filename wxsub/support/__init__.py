"""Support and operations: "why didn't this user get the message?" (docs/support.md).

``local`` reads the committed stores this worker owns, ``routing`` finds the worker that owns a
key's partition and forwards, ``service`` composes a user's or an order's trace, ``web`` serves
the query API and the console, ``trace`` is ``wxsub trace``, ``replay`` is ``wxsub dlq replay``.
"""
