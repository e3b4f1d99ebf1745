"""A pytest plugin the grading wrapper loads into the one pytest it runs (``-p``).

The wrapper sets a few variables for that process only: ``PYTHONSAFEPATH`` (no working
directory on ``sys.path``), ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``, ``PYTEST_ADDOPTS`` (its
junit pipe and this plugin) and ``PYTHONPATH`` (where this file is). pytest has read them by
the time it imports a ``-p`` plugin, so this one puts the environment back as the task had
it: a test's own child processes (a script run with ``python``, a nested pytest) then run as
they would under the official harness, and a nested pytest does not write into the
wrapper's junit pipe. Nothing here is a defence: the variables are not secret, and code
under test could change them anyway.

Standard library only; ``RATCHET_RESTORE_ENV`` holds ``{name: value or null}``.
"""

import json
import os

for _name, _value in json.loads(os.environ.pop("RATCHET_RESTORE_ENV", "{}")).items():
    if _value is None:
        os.environ.pop(_name, None)
    else:
        os.environ[_name] = _value
