"""The paper's models: GPT-2 (CLS head, LM head, causal LM for TOFU) and CLIP ViT-B-32.

Inputs are plain tensors so the kit's finetuning runs unchanged (``model(x[idx])``):

* text: ``x`` is ``(N, L)`` int64 token ids, **right**-padded with ``PAD = -1`` (the models
  build the attention mask from ``x >= 0``);
* images: ``x`` is ``(N, 3, S, S)`` uint8 RGB (resized and center-cropped); the model scales
  to [0, 1] and normalizes with CLIP's mean/std itself (uint8 keeps 500 tasks in memory).

Classifier heads (draft, Tables 4–5):

* ``head="cls"``: a new linear layer on the last real token's hidden state, initialised from an
  explicit generator (N(0, 0.02), GPT-2's init; bias 0), outputs class indices;
* ``head="lm"``: the pretrained LM head emits the class *name*. ``lm_scoring="first-token"``
  returns the LM logits of the first token of each name at the last prompt position (names
  must start with distinct tokens); ``"sequence"`` returns Σ log p(name tokens | prompt) per
  class (one extra forward per class); ``"auto"`` picks first-token when the first tokens are
  distinct. Either way the output is ``(N, C)`` and the loss is cross-entropy over the C
  classes (softmax restricted to the class names).

Weights are never downloaded: :func:`load_gpt2` / :func:`load_clip` read a local folder or
file, ``$CLAMU_DATA/models/…``, or the Hugging Face / open_clip cache, and raise
:class:`MissingResourceError` saying what to download where. ``tiny_gpt2`` / ``tiny_clip``
build the same architectures at toy size with seeded random weights (tests, GPU code paths).

(Over 300 lines on purpose: the paper's two model families (GPT-2 heads, CLIP ViT-B-32) with
their loaders and the tiny random-weight twins the tests use.)
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..runtime.determinism import generator, stable_seed
from ..core.errors import ClamuError, MissingResourceError

PAD = -1
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
GPT2_NAMES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
              "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl"}
CLIP_PRETRAINED = ("laion2b_s34b_b79k", "openai")


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data directory: ``path``, else ``$CLAMU_DATA``, else ``~/clamu_data``."""
    return Path(path or os.environ.get("CLAMU_DATA") or Path.home() / "clamu_data").expanduser()


# -- tokenizers -------------------------------------------------------------------------------
class ByteTokenizer:
    """UTF-8 bytes as tokens (0–255) plus EOS = 256: the offline tokenizer of tiny models."""

    vocab_size = 257
    eos_token_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A thin wrapper giving a Hugging Face tokenizer the same ``encode`` / ``eos_token_id``."""

    def __init__(self, tok):
        self.tok = tok
        self.eos_token_id = int(tok.eos_token_id)
        self.vocab_size = len(tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids))


def pad_batch(seqs: Sequence[Sequence[int]], length: int | None = None, value: int = PAD) -> torch.Tensor:
    """Right-pad token lists into an ``(N, L)`` int64 tensor."""
    n = max((len(s) for s in seqs), default=1) if length is None else length
    out = torch.full((len(seqs), max(1, n)), value, dtype=torch.int64)
    for i, s in enumerate(seqs):
        s = list(s)[:n]
        out[i, :len(s)] = torch.tensor(s, dtype=torch.int64)
    return out


# -- GPT-2 ------------------------------------------------------------------------------------
class TopK:
    """Picklable predicate: every parameter (``top_k=None``) or the parameters of the last
    ``top_k`` blocks named ``<block>.<i>.…`` plus those starting with one of ``always``."""

    def __init__(self, top_k: int | None, n_layer: int, block: str, always: Sequence[str]):
        self.top_k, self.first, self.always = top_k, n_layer - int(top_k or 0), tuple(always)
        self.pattern = re.compile(re.escape(block) + r"\.(\d+)\.")

    def __call__(self, name: str) -> bool:
        if self.top_k is None:
            return True
        m = self.pattern.search(name)
        return int(m.group(1)) >= self.first if m else name.startswith(self.always)


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    return (mask.sum(1) - 1).clamp_min(0)


class GPT2Classifier(nn.Module):
    """GPT-2 as a C-way classifier of right-padded token ids (see the module docstring).

    ``train_top_k``: ``None`` trains every parameter; ``k`` trains the last k blocks, the final
    layer norm and the CLS head (the LM head is tied to the input embedding, so with ``k`` it
    stays frozen)."""

    def __init__(self, lm: nn.Module, num_classes: int, head: str = "cls",
                 class_tokens: Sequence[Sequence[int]] | None = None, lm_scoring: str = "auto",
                 seed: int = 0, train_top_k: int | None = None):
        super().__init__()
        if head not in ("cls", "lm"):
            raise ClamuError(f"head must be 'cls' or 'lm', got {head!r}")
        self.transformer = lm.transformer
        self.head, self.num_classes, self.train_top_k = head, int(num_classes), train_top_k
        n_embd, n_layer = lm.config.n_embd, lm.config.n_layer
        if head == "cls":
            self.score = nn.Linear(n_embd, num_classes)
            with torch.no_grad():
                self.score.weight.copy_(torch.randn(num_classes, n_embd, generator=generator(seed, "cls-head")) * 0.02)
                self.score.bias.zero_()
        else:
            if class_tokens is None or len(class_tokens) != num_classes or any(len(t) == 0 for t in class_tokens):
                raise ClamuError("head='lm' needs one non-empty token list per class (the class names)")
            self.lm_head = lm.lm_head
            firsts = [t[0] for t in class_tokens]
            distinct = len(set(firsts)) == len(firsts)
            if lm_scoring == "auto":
                lm_scoring = "first-token" if distinct else "sequence"
            if lm_scoring not in ("first-token", "sequence"):
                raise ClamuError(f"lm_scoring must be 'first-token', 'sequence' or 'auto', got {lm_scoring!r}")
            if lm_scoring == "first-token" and not distinct:
                raise ClamuError(f"class names share first tokens {firsts}: use lm_scoring='sequence' or other names")
            self.lm_scoring = lm_scoring
            self.register_buffer("first_tokens", torch.tensor(firsts, dtype=torch.int64), persistent=False)
            self.register_buffer("class_tokens", pad_batch(class_tokens), persistent=False)
        always = ["transformer.ln_f", "score"]
        self._trained = TopK(train_top_k, n_layer, "transformer.h", always)

    def is_trained(self, name: str) -> bool:
        """Whether finetuning changes parameter ``name`` (see ``train_top_k``)."""
        return self._trained(name)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden state of the last real token of each row, ``(N, n_embd)`` (the draft's
        "features at the last layer and last token", used by feature clustering)."""
        mask = x >= 0
        h = self.transformer(input_ids=x.clamp_min(0), attention_mask=mask.long()).last_hidden_state
        return h[torch.arange(len(x), device=x.device), _last_index(mask)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head == "cls":
            return self.score(self.hidden(x))
        if self.lm_scoring == "first-token":
            return self.hidden(x) @ self.lm_head.weight[self.first_tokens].T
        return self._sequence_scores(x)

    def _sequence_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Σ log p(class-name tokens | prompt) for every class: ``(N, C)``."""
        n, c = len(x), self.num_classes
        ct = self.class_tokens.to(x.device)
        lens = (x >= 0).sum(1)                                 # (N,) prompt lengths
        width = x.shape[1] + ct.shape[1]
        seq = torch.full((n, c, width), PAD, dtype=torch.int64, device=x.device)
        seq[:, :, :x.shape[1]] = x[:, None, :]
        pos = lens[:, None, None] + torch.arange(ct.shape[1], device=x.device)[None, None, :]  # (N,1,Lc)
        pos = pos.expand(n, c, -1)
        val = ct[None].expand(n, -1, -1)
        seq.scatter_(2, pos, val)
        seq = seq.reshape(n * c, width)
        mask = seq >= 0
        h = self.transformer(input_ids=seq.clamp_min(0), attention_mask=mask.long()).last_hidden_state
        # hidden states at positions start … start+Lc-1 predict the name tokens (right after)
        start = lens[:, None].expand(n, c).reshape(-1, 1) - 1                     # (N*C, 1)
        idx = start + torch.arange(ct.shape[1], device=x.device)[None]            # (N*C, Lc)
        hs = h.gather(1, idx[..., None].expand(-1, -1, h.shape[-1]))
        logp = F.log_softmax(self.lm_head(hs).float(), -1)
        tgt = ct[None].expand(n, -1, -1).reshape(n * c, -1)
        lp = logp.gather(2, tgt.clamp_min(0)[..., None])[..., 0] * (tgt >= 0)
        return lp.sum(1).reshape(n, c)


class GPT2CausalLM(nn.Module):
    """GPT-2 language model for TOFU: ``forward(x)`` gives next-token logits ``(N, L, V)``;
    :func:`answer_nll` turns them into the loss on answer tokens only."""

    def __init__(self, lm: nn.Module, train_top_k: int | None = None):
        super().__init__()
        self.lm = lm
        self.train_top_k = train_top_k
        self._trained = TopK(train_top_k, lm.config.n_layer, "lm.transformer.h", ["lm.transformer.ln_f"])

    def is_trained(self, name: str) -> bool:
        return self._trained(name)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden state (after ``ln_f``) of the last real token of each row, ``(N, n_embd)``
        (as :meth:`GPT2Classifier.hidden`; the draft's "features at the last layer and last
        token", used by feature clustering)."""
        mask = x >= 0
        h = self.lm.transformer(input_ids=x.clamp_min(0), attention_mask=mask.long()).last_hidden_state
        return h[torch.arange(len(x), device=x.device), _last_index(mask)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x >= 0
        return self.lm(input_ids=x.clamp_min(0), attention_mask=mask.long()).logits


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example summed NLL of the label tokens and their counts. ``labels`` is ``(N, L)``
    with the target token at each answer position and ``-100`` elsewhere (not shifted)."""
    lg, tg = logits[:, :-1], labels[:, 1:]
    keep = tg != -100
    lp = F.log_softmax(lg.float(), -1).gather(2, tg.clamp_min(0)[..., None])[..., 0]
    return -(lp * keep).sum(1), keep.sum(1)


def _gpt2_source(name: str, root: Path | None) -> str:
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    local = data_dir(root) / "models" / name.split("/")[-1]
    return str(local) if local.is_dir() else GPT2_NAMES.get(name, name)


def load_gpt2(name: str = "openai-community/gpt2", root: str | os.PathLike | None = None):
    """Pretrained ``(GPT2LMHeadModel, HFTokenizer)`` from a local folder, ``$CLAMU_DATA/models/
    <name>`` or the Hugging Face cache, never the network."""
    from transformers import AutoTokenizer, GPT2LMHeadModel
    src = _gpt2_source(name, root)
    try:
        model = GPT2LMHeadModel.from_pretrained(src, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    except (OSError, ValueError) as e:
        hub = GPT2_NAMES.get(name, name)
        raise MissingResourceError(
            f"GPT-2 weights {name!r} are not on this machine (looked in {src!r} and the Hugging Face cache). "
            f"Download them once with network access: `huggingface-cli download {hub}` (fills the HF cache), "
            f"or save the model folder to {data_dir(root) / 'models' / hub.split('/')[-1]}") from e
    return model, HFTokenizer(tok)


def tiny_gpt2(seed: int = 0, n_layer: int = 2, n_embd: int = 32, n_head: int = 2, vocab_size: int = 257,
              n_positions: int = 256, **config):
    """A GPT-2 LM with seeded random weights (default: toy size with the byte tokenizer's
    vocabulary). ``tiny_gpt2(n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
    n_positions=1024)`` is GPT-2 Small at real size."""
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size,
                     n_positions=n_positions, bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1, **config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(seed, "tiny-gpt2"))
        return GPT2LMHeadModel(cfg)


# -- CLIP -------------------------------------------------------------------------------------
class CLIPClassifier(nn.Module):
    """CLIP vision encoder + zero-shot head: logits = s · norm(f(x)) · Wᵀ, where the rows of W are
    normalized text embeddings of ``template.format(name)`` and s = exp(logit_scale) (fixed).

    ``train_head`` (default False, as in task arithmetic / TALL) says whether W is finetuned;
    ``train_top_k`` (default None = all) trains only the last k vision blocks plus
    ``ln_post``/``proj``."""

    def __init__(self, visual: nn.Module, head_weight: torch.Tensor, logit_scale: float,
                 train_head: bool = False, train_top_k: int | None = None,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(head_weight.shape[1], head_weight.shape[0], bias=False)
        with torch.no_grad():
            self.head.weight.copy_(head_weight)
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.train_head = train_head
        n_layer = len(visual.transformer.resblocks)
        self._vis = TopK(train_top_k, n_layer, "visual.transformer.resblocks", ["visual.ln_post", "visual.proj"])

    def is_trained(self, name: str) -> bool:
        return self.train_head if name.startswith("head.") else self._vis(name)

    @property
    def image_size(self) -> int:
        s = self.visual.image_size
        return int(s[0] if isinstance(s, (tuple, list)) else s)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        return F.normalize(self.visual((x - self.mean) / self.std), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.head(self.features(x))


@torch.no_grad()
def text_head(clip_model: nn.Module, tokenizer, class_names: Sequence[str],
              templates: Sequence[str] = ("a photo of a {}.",)) -> torch.Tensor:
    """Zero-shot head ``(C, D)``: per class, the normalized mean of the normalized text
    embeddings of each template filled with the class name."""
    rows = []
    clip_model.eval()
    for name in class_names:
        tok = tokenizer([t.format(name) for t in templates])
        e = F.normalize(clip_model.encode_text(tok), dim=-1).mean(0)
        rows.append(F.normalize(e, dim=-1))
    return torch.stack(rows)


def clip_classifier(clip_model: nn.Module, tokenizer, class_names: Sequence[str], **kw) -> CLIPClassifier:
    """Wrap a full open_clip ``CLIP`` model: its vision tower plus a text-initialised head."""
    head = text_head(clip_model, tokenizer, class_names, kw.pop("templates", ("a photo of a {}.",)))
    scale = float(clip_model.logit_scale.detach().exp())
    return CLIPClassifier(clip_model.visual, head, scale, **kw)


def load_clip(model_name: str = "ViT-B-32", pretrained: str = "laion2b_s34b_b79k",
              root: str | os.PathLike | None = None):
    """Pretrained open_clip ``(model, tokenizer)``; ``pretrained`` is a tag (read from the
    open_clip / HF cache or ``$CLAMU_DATA/models/open_clip_<model>_<tag>.bin``) or a file."""
    import open_clip
    local = data_dir(root) / "models" / f"open_clip_{model_name}_{pretrained}.bin"
    src = pretrained if Path(pretrained).expanduser().is_file() else (str(local) if local.is_file() else pretrained)
    try:
        model = open_clip.create_model(model_name, pretrained=src, weights_only=True)
    except Exception as e:  # open_clip raises RuntimeError / OSError / HF errors when offline
        raise MissingResourceError(
            f"CLIP weights {model_name}/{pretrained} are not on this machine (looked at {src!r}, {local} and the "
            f"open_clip/Hugging Face cache). With network access run once: `python -c \"import open_clip; "
            f"open_clip.create_model('{model_name}', pretrained='{pretrained}')\"`, or save the checkpoint to "
            f"{local}") from e
    return model, open_clip.get_tokenizer(model_name)


def tiny_clip(seed: int = 0, embed_dim: int = 16, width: int = 32, layers: int = 2, image_size: int = 32,
              patch_size: int = 8, text_width: int = 32, text_layers: int = 1):
    """An open_clip ``CLIP`` at toy size with seeded random weights and the real BPE tokenizer
    (bundled with open_clip, so offline). ``open_clip.create_model("ViT-B-32")`` is the real size."""
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    vcfg = CLIPVisionCfg(layers=layers, width=width, head_width=max(8, width // 2), patch_size=patch_size,
                         image_size=image_size)
    tcfg = CLIPTextCfg(context_length=77, vocab_size=49408, width=text_width, heads=2, layers=text_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(seed, "tiny-clip"))
        model = CLIP(embed_dim, vcfg, tcfg)
    return model, open_clip.get_tokenizer("ViT-B-32")
