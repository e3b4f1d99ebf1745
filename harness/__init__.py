"""The controller: the generation loop, git lineage, proposer, acceptance, LLM gateway and
the ``ratchet`` CLI. Trusted code: the loop never edits it."""
