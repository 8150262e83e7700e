"""Engine options: one description of how vLLM runs, as flags and back."""

from __future__ import annotations


def test_engine_arguments_give_the_options_back():
    import argparse

    from server.options import EngineOptions, add_engine_arguments, engine_options

    opts = EngineOptions(
        max_model_len=2048, dtype="bfloat16", enforce_eager=True, prefix_caching=False, chunked_prefill=True,
        speculative_config={"method": "ngram", "num_speculative_tokens": 3}, gpu_memory_utilization=0.8, seed=7,
        tensor_parallel_size=2, quantization="fp8",
    )  # fmt: skip
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    assert engine_options(parser.parse_args(opts.engine_arguments())) == opts
    assert engine_options(parser.parse_args(EngineOptions().engine_arguments())) == EngineOptions()
