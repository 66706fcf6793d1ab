"""Benchmarks: speed measured against baselines timed in the same run, never asserted by tests.

* ``python -m lab.bench`` (:mod:`lab.bench.train`): the trainer's step on the proxy ladder against
  the machine's matmul peak, transformers' ``LlamaForCausalLM`` (the peer), a plain LLaMA prototype
  (:mod:`lab.bench.prototype`) and, with ``--packed K``, K solo runs against one pack of K;
* ``python -m lab.bench.fit`` (:mod:`lab.bench.fit`): approach 3's batched fit against a scipy loop.
"""
