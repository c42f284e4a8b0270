"""``wxsub demo``: the whole system on one machine, with a simulated shop and a reconciliation.

Local Kafka, the WeChat API sandbox (pushing accepts and sent receipts to the gateway like
WeChat), the gateway and two workers as ``wxsub`` subprocesses, then a shop's traffic, live
progress and a summary in which every event is accounted for. See :mod:`wxsub_dev.demo.run`.
"""

from wxsub_dev.demo.run import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
