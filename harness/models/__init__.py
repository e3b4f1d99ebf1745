"""Models on the host: the LLM gateway every call goes through (`gateway`, with `_gateway_http`,
`_chat_request`, `_retry`), its spend (`ledger`, `prices`), relays from cluster nodes (`relay`),
endpoints (`upstreams`, `endpoint`), and the built-in scripted model server with its scripts
(`scripted_model`, `oracle`, `stochastic_demo`)."""
