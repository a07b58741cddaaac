"""The gateway (:8080): one OpenAI-compatible API in front of the fleet's model pools."""
