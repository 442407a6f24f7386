"""The contested sale, run as the demo and as the benchmark (``python -m bench.flash_sale``)."""
