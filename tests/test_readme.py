"""The README's promises: its 'own model' example runs as written, and its commands exist."""
import re
from pathlib import Path

from clamu_helpers import Task
from clamu_helpers.settings.synthetic import SyntheticSetting

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_own_model_example_runs_and_unlearns_exactly():
    block = re.search(r"## Use it on your own model.*?```python\n(.*?)```", README, re.S).group(1)
    base = SyntheticSetting(tasks=50)
    tasks = [Task(f"client-{i}", t.train, t.val, t.test, t.labels) for i, t in enumerate(base.tasks)]
    ns = {"model": base.model, "tasks": tasks}
    exec(compile(block, "README.md", "exec"), ns)
    system = ns["system"]
    assert "client-42" not in system.task_ids and len(system.task_ids) == 49
    assert ns["served"] is not None


def test_readme_starts_with_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    assert blocks[0].strip() == "bash scripts/setup.sh && .venv/bin/python -m clamu_helpers reproduce --profile cpu"
    assert blocks[1].strip() == "bash scripts/test.sh"
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


def test_every_file_the_readme_links_exists():
    root = Path(__file__).resolve().parents[1]
    links = re.findall(r"\]\(([^)#\s]+)\)", README)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "expected links to the gallery"
    missing = [link for link in local if not (root / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_merging_across_machines_example_gives_the_one_machine_digest(tmp_path, monkeypatch):
    import torch

    from clamu_helpers.core.ledger import MergeLedger
    from clamu_helpers.core.params import ParamSpec
    from clamu_helpers.scaleout.partial import PartialLedger
    from clamu_helpers.training.store import TaskVectorStore
    from clamu_helpers.core.taskvector import TaskVector
    block = re.search(r"## Merging across machines.*?```python\n(.*?)```", README, re.S).group(1)
    spec = ParamSpec(("w",), ((300,),))
    g = torch.Generator().manual_seed(0)
    vecs = [TaskVector(f"t{i}", torch.randn(300, generator=g) * 1e-2, spec) for i in range(6)]
    monkeypatch.chdir(tmp_path)
    other = [PartialLedger.of(vecs[3:5]).save(tmp_path / "m1.safetensors"),
             PartialLedger.of(vecs[5:]).save(tmp_path / "m2.safetensors")]
    store = TaskVectorStore(tmp_path / "store")
    keys = [store.mask_key("readme", i) for i in range(6)]
    for k, tv in zip(keys, vecs):
        store.put(k, tv)
    ns = {"my_task_vectors": vecs[:3], "other_paths": other, "store": store, "keys": keys, "spec": spec}
    exec(compile(block, "README.md", "exec"), ns)
    one_machine = MergeLedger.from_vectors(vecs).digest()
    assert ns["merged"].digest() == one_machine == ns["led"].digest()
    from clamu_helpers.scaleout.streaming import stream_emr, stream_tall_masks
    serial_tall, serial_emr = stream_tall_masks(store, keys, spec), stream_emr(store, keys, spec)
    assert all(torch.equal(ns["tall"].masks[lam][t], serial_tall.masks[lam][t])
               for lam in serial_tall.masks for t in serial_tall.masks[lam])
    assert torch.equal(ns["emr"].emr.tau_uni, serial_emr.emr.tau_uni) and ns["emr"].emr.rescalers == serial_emr.emr.rescalers
