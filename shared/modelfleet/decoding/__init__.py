"""The decoding engine shared by the decoder services (llm, generation).

``loader`` turns a MODEL setting into a ready causal LM (converting the packaged GGUF once),
``engine`` batches concurrent sequences continuously over it (``sequence`` is a sequence's
state, ``handles`` what a caller holds), ``attention`` keeps those sequences apart inside one
packed forward pass, ``sampling`` applies penalties, biases and grammar masks batched and draws
tokens, ``grammar`` compiles xgrammar grammars for structured output and tool calls, ``tools``
puts tools into prompts and takes tool calls out of text, ``text`` turns tokens into streamed
text, ``logprobs`` and ``openai`` are the request/response shapes both services share,
``params`` turns a request into sampling parameters (defaults, limits), ``int8`` is the
optional CPU quantisation and ``service`` the ModelService base they build on.
"""
