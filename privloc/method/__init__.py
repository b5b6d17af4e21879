"""The paper's method and the attacker: what a library user imports.

The victim model and its tokenizer, the decoder families and the built-in pretrained models; the HardConcrete
neuron gates, their mask file and Algorithm 1 that learns them; the baselines that rank neurons without a mask;
switching neurons off; and the attack suite with its batched search, logit lens, candidate sets and metrics.
"""
