"""A WeChat API sandbox: tokens, subscribe/send, gettemplate, an admin API, faults, a record.

Clients talk to it unchanged (only the base URL differs). Start it with ``wxsub sandbox`` or
in-process with :func:`run_sandbox`.
"""

from wxsub_sandbox.clock import Clock, ManualClock
from wxsub_sandbox.faults import FaultSpec, Latency
from wxsub_sandbox.recorder import CallRecord, Recorder
from wxsub_sandbox.server import Sandbox, create_app, run_sandbox
from wxsub_sandbox.tokens import TokenConfig
from wxsub_sandbox.world import App, EventHook, Template, World, default_world, load_world

__all__ = [
    "App",
    "CallRecord",
    "Clock",
    "EventHook",
    "FaultSpec",
    "Latency",
    "ManualClock",
    "Recorder",
    "Sandbox",
    "Template",
    "TokenConfig",
    "World",
    "create_app",
    "default_world",
    "load_world",
    "run_sandbox",
]
