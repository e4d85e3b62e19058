"""Task vectors from finetuning: one deterministic finetune (``finetune``), many of them in
parallel, serially, in processes or through Ray (``parallel``), and the content-addressed store
they land in (``store``). Above :mod:`clamu_helpers.settings`, which says what is finetuned."""
