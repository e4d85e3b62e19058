"""Unlearning receipts: every request leaves a verifiable, hash-chained record.

Each :meth:`UnlearningSystem.unlearn` appends a receipt to ``system.receipts``::

    {"format", "system_id", "index", "request_id", "utc", "forgotten",
     "tasks": {u: {"retrained", "merged"}},                 # digests of τ_u, equal, or unlearning was refused
     "served_before", "served_after",                       # served digests around the request
     "method": {"name", "params"}, "fingerprint", "costs",
     "previous": SHA-256 of the previous receipt (of the system id for the first),
     "sha256": SHA-256 of this receipt without this field}

The task digests name their algorithm (``"blake3:…"``, :mod:`clamu_helpers.core.digests`);
receipts of format ``clamu-receipt/1`` (before digests were named) held bare SHA-256 hex under
``retrained_sha256``/``merged_sha256`` and still verify, also in one chain with newer ones.

A receipt holds ids and hashes only: never data, task vectors or model weights. The chain
makes a deleted, edited, reordered or foreign receipt detectable (:func:`check_chain`), and
the last receipt's ``served_after`` must equal the digest the state serves now. Receipts are
saved inside ``state.json`` (``clamu_helpers.unlearning.persistence``), so they are written atomically
with the state they describe: a crash leaves both old or both new.

What a receipt proves: that the served model (τ̄ and the method's state, summarised by the
served digest) equals, bit for bit, the one a system fitted without the forgotten tasks would
serve, *under the recorded environment* (``verify --rebuild`` re-derives it). What it does not
prove: anything outside the merged model (logs, caches, copies of the data, backups, the
finetune store — see ``TaskVectorStore.purge``).
"""
from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timezone

FORMAT = "clamu-receipt/2"
#: each format's names of the retrained and merged digests of a forgotten task
TASK_FIELDS = {"clamu-receipt/1": ("retrained_sha256", "merged_sha256"), FORMAT: ("retrained", "merged")}
#: what the first receipt's ``previous`` is derived from (fixed with the first format: chains stay anchored)
_GENESIS = "clamu-receipt/1"


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def receipt_hash(receipt: dict) -> str:
    """SHA-256 of a receipt's canonical JSON without its own ``sha256`` field."""
    return hashlib.sha256(_canonical({k: v for k, v in receipt.items() if k != "sha256"})).hexdigest()


def genesis(system_id: str) -> str:
    """What the first receipt of system ``system_id`` names as its ``previous``."""
    return hashlib.sha256(f"{_GENESIS}:genesis:{system_id}".encode()).hexdigest()


def new_system_id() -> str:
    """A fresh random id for a fitted system (kept across saves and loads)."""
    return secrets.token_hex(16)


def make(chain: list[dict], system_id: str, forgotten: list[str], retrained: dict[str, str],
         merged: dict[str, str], before: str, after: str, method: dict, fingerprint: dict, costs: dict) -> dict:
    """The next receipt of ``chain`` (not appended): ids and hashes of one request."""
    receipt = {
        "format": FORMAT, "system_id": system_id, "index": len(chain),
        "request_id": secrets.token_hex(8), "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "forgotten": list(forgotten),
        "tasks": {u: {"retrained": retrained[u], "merged": merged[u]} for u in forgotten},
        "served_before": before, "served_after": after,
        "method": {"name": method["name"], "params": method["params"]},
        "fingerprint": dict(fingerprint), "costs": dict(costs),
        "previous": chain[-1]["sha256"] if chain else genesis(system_id),
    }
    receipt["sha256"] = receipt_hash(receipt)
    return receipt


def check_chain(chain: list[dict], system_id: str, served: str | None = None) -> list[str]:
    """What is wrong with ``chain`` for system ``system_id`` serving digest ``served`` (when
    given), first problem first; each names the receipt (index and request id). Empty: the
    chain verifies."""
    problems = []
    previous = genesis(system_id)
    for i, r in enumerate(chain):
        name = f"receipt {i} ({r.get('request_id', '?') if isinstance(r, dict) else '?'})"
        if not isinstance(r, dict) or r.get("format") not in TASK_FIELDS:
            problems.append(f"{name}: not a receipt of a known format ({', '.join(TASK_FIELDS)})")
            break
        got, want = TASK_FIELDS[r["format"]]
        try:
            own = receipt_hash(r)
        except (TypeError, ValueError) as e:
            problems.append(f"{name}: not canonical JSON ({e})")
            break
        if r.get("sha256") != own:
            problems.append(f"{name}: edited (its content hashes to {own[:16]}…, it says {str(r.get('sha256'))[:16]}…)")
        if r.get("system_id") != system_id:
            problems.append(f"{name}: belongs to another system ({str(r.get('system_id'))[:12]}…, this one is {system_id[:12]}…)")
        if r.get("index") != i or r.get("previous") != previous:
            problems.append(f"{name}: out of chain (a receipt before it was removed, inserted or reordered)")
        bad = [u for u, h in (r.get("tasks") or {}).items() if h.get(got) is None or h.get(got) != h.get(want)]
        if bad:
            problems.append(f"{name}: retrained hashes differ from the merged ones for {bad}")
        if i and chain[i - 1].get("served_after") != r.get("served_before"):
            problems.append(f"{name}: starts from digest {str(r.get('served_before'))[:16]}…, the receipt before "
                            f"ended at {str(chain[i - 1].get('served_after'))[:16]}…")
        previous = r.get("sha256")
        if problems:
            break
    if not problems and served is not None and chain and chain[-1].get("served_after") != served:
        problems.append(f"the state serves digest {served[:16]}…, the last receipt ({len(chain) - 1}) says "
                        f"{str(chain[-1].get('served_after'))[:16]}…: the state changed after its last receipt")
    return problems


def summary(receipt: dict) -> dict:
    """One line of ``receipts DIR``: index, request id, time, what was forgotten, digests."""
    return {"index": receipt.get("index"), "request_id": receipt.get("request_id"), "utc": receipt.get("utc"),
            "forgotten": ", ".join(receipt.get("forgotten", [])),
            "method": (receipt.get("method") or {}).get("name"),
            "served_before": str(receipt.get("served_before"))[:16], "served_after": str(receipt.get("served_after"))[:16],
            "gradient_steps": (receipt.get("costs") or {}).get("gradient_steps"),
            "sha256": str(receipt.get("sha256"))[:16]}


__all__ = ["FORMAT", "check_chain", "genesis", "make", "new_system_id", "receipt_hash", "summary"]
