"""The unlearning system: fit → serve → unlearn (``system``), its state as a value
(``state``), saved atomically and re-read (``persistence``), the hash-chained receipts of every
request (``receipts``), the exactness audit (``audit``) and one saved system shared by several
processes (``shared_state``)."""
