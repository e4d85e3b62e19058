"""The exact core: what the bit-for-bit guarantee rests on.

τ_t as flat float32 vectors over a parameter spec (``taskvector``, ``params``), the exact,
order-independent merge τ̄ = Σ_t τ_t (``ledger``, its fused kernel ``ledger_kernel``), content
digests (``digests``), masks stored as bits (``packing``), TIES's formula (``merging``),
crash-safe writes (``atomic``) and every error the kit raises (``errors``). Imports nothing
else of the package."""
