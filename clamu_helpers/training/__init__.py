"""Task vectors from finetuning: one deterministic finetune (``finetune``), many of them in
parallel, serially, in processes or through Ray (``parallel``), the content-addressed store
they land in (``store``) and its in-memory twin, a system's store when it is given none
(``memory_store``). Above :mod:`clamu_helpers.settings`, which says what is finetuned."""
