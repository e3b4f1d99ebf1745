"""Proposing a change of the agent: from a meta model (`meta`) or from the agent itself in a
sandbox (`self`), out of the parent's failures (`evidence`), as edits (`edits`) checked in
sandboxes (`smoke`). Prompts are jinja2 templates in `prompts/`."""
