"""agent_seed: the seed coding agent, generation 0 of every ratchet run.

A whole agent in a few small modules, in the spirit of mini-swe-agent:

- ``agent.py``     the loop: model reply -> one bash block -> run it -> observation
- ``model.py``     the ``ModelClient`` seam: openai (gateway socket or env), scripted fake
- ``config.py``    config.yaml -> ``AgentConfig``; strict jinja2 rendering
- ``errors.py``    the exception tree that drives the loop
- ``selfcheck.py`` offline checks of the real loop (``python -m agent_seed selfcheck``)
- ``config.yaml``  model default, limits, prompt templates; ``lessons.md`` notes for the prompt

Runtime dependencies: openai, jinja2, pyyaml and the standard library, nothing else.
This package never imports ratchet's ``harness`` or ``benchmark``.
"""

__version__ = "0.1.0"
