"""AvisC (arXiv 2405.17820) and its baselines as a transformers custom generation method.

``model.generate(**inputs, custom_generate=<this repository>, trust_remote_code=True, method="avisc",
alpha=2.5, max_new_tokens=64)``: ``method`` and the method's hyper-parameters are extra keywords of
the call; everything else is generate's own. The decoding itself is ``avisc_lib.decode``.
"""

from transformers.generation.utils import GenerationMixin

from avisc_lib.integrations.hf_generate import custom_generate, method_options


def generate(model, *args, method="avisc", **kwargs):
    """Run ``GenerationMixin.generate`` with ``avisc_lib.custom_generate(method, **hyper-parameters)``.

    Returns what generate returns: the prompt ids followed by the new tokens, ``[B, L + T]``.
    """
    hyper_parameters = {name: kwargs.pop(name) for name in method_options() if name in kwargs}
    return GenerationMixin.generate(model, *args, custom_generate=custom_generate(method, **hyper_parameters), **kwargs)
