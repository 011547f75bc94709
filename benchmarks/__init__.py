"""Benchmarks, run by `storypush bench` and `python -m benchmarks.<name>`, and the push-service
simulator they drive (`benchmarks.pushsim`), which the tests use too."""
