"""Reproducing the paper: one function per figure or table (``experiments``), the claims and
their verdicts (``claims``), figures and tables with provenance (``plots``, ``provenance``), the
profiles (``profiles``), running every notebook (``reproduce``, ``watchdog``,
``notebook_files``), the unlearning-cost counting (``unlearning_cost``), benchmark results read
into the report (``bench_results``), and the teaching demo and explorers (``demo``,
``explore``). The top of the package: nothing imports it but the command line."""
from pathlib import Path

#: the repository a source checkout runs from (notebooks/, figures/, benchmarks/ beside the package)
ROOT = Path(__file__).resolve().parents[2]
