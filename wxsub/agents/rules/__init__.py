"""The decisions of wxsub as pure functions of (state, input, config, now_ms).

The agents hold no decisions: they read state, call these, write state and produce what they
return. Modules: ``orders`` (orders table, logistics join, pending, orphans), ``watches``
(watches and product fan-out), ``subscriptions`` (per-user state: credits, mutes, preferences),
``decide`` (policies, intents), ``render`` (send bodies), ``content`` (sensitive words).
"""

__all__: list[str] = []
