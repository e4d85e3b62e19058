"""Merging and localizing at the paper's size: τ̄ over shares of the tasks computed anywhere
and reduced exactly (``partial``), and merges and mask builds streamed from the store with
memory independent of T (``streaming``)."""
