"""Reproducing the paper: one function per figure or table (``experiments``, and ``figures`` for
those that combine its building blocks), the quantity each claim is judged on (``measures``), the
claims and their verdicts (``claims``), figures and tables with provenance (``plots``,
``provenance``), the profiles (``profiles``), running every notebook (``reproduce``,
``watchdog``, ``notebook_files``), the unlearning-cost counting (``unlearning_cost``), benchmark
results read into the report (``bench_results``), the teaching demo and explorers (``demo``,
``explore``), and the one import a notebook starts with (``notebook``). The top of the package:
nothing in it imports this layer but the command line."""
from pathlib import Path

#: the repository a source checkout runs from (notebooks/, figures/, benchmarks/ beside the package)
ROOT = Path(__file__).resolve().parents[2]
