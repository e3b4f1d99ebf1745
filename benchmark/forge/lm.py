"""The LM strategy: rewrite one library function through a model so that it carries a subtle
bug (SWE-smith's "LM rewrite"). NOT IMPLEMENTED YET: this is a documented stub.

It needs an OpenAI-compatible endpoint (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``); the
candidates it would produce go through exactly the same screening, deduplication and
validation as the AST strategy's. Until it is written, ``--strategy lm`` forges nothing and
says so in its report.
"""

from __future__ import annotations

import os

__all__ = ["lm_report"]


def lm_report(requirement: str):
    from benchmark.forge.forge import ForgeReport

    report = ForgeReport(requirement, "lm")
    if os.environ.get("OPENAI_BASE_URL"):
        report.notes.append("the LM rewrite strategy is not implemented yet (stub); "
                            "no candidates were tried")
    else:
        report.notes.append("the LM rewrite strategy needs a model: set OPENAI_BASE_URL and "
                            "OPENAI_API_KEY; it is also still a stub, so no candidates were tried")
    return report
