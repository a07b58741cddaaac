"""The decoding engine shared by the decoder services (llm, generation).

``loader`` turns a MODEL setting into a ready causal LM (converting the packaged GGUF once),
``engine`` batches concurrent sequences continuously over it, ``attention`` keeps those
sequences apart inside one packed forward pass, ``sampling`` and ``text`` turn logits into
streamed text, ``int8`` is the optional CPU quantisation, ``openai`` the request/response shapes
both services share and ``service`` the ModelService base they build on.
"""
