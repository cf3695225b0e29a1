"""GroundingDINO Swin-T OGC, built strictly offline, and its text-prompted box detection.

groundingdino-py creates its text side inside ``GroundingDINO.__init__`` by *name*, through
``groundingdino.util.get_tokenlizer.get_tokenlizer`` (an ``AutoTokenizer``) and
``get_pretrained_language_model`` (a ``BertModel``), both ``from_pretrained`` — a hub download
for the config's ``"bert-base-uncased"``. There is no argument to hand it objects, so
``build_grounding_dino`` swaps those two functions for the duration of the build only
(``_text_side``, restored on exit) and supplies:

* real weights: the tokenizer and BERT of a local ``bert-base-uncased`` folder
  (``local_files_only``), then the GroundingDINO checkpoint on top;
* random init: ``BertConfig()`` (= bert-base-uncased's architecture) with random weights and a
  ``BertTokenizerFast`` over a small generated WordPiece vocabulary (``local_tokenizer``).

``GroundingDinoBert`` adds back the three mask helpers that groundingdino's ``BertModelWarper``
copies from the BERT model and that transformers 5 removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from groundingdino.datasets.transforms import resize
from groundingdino.models import build_model
from groundingdino.util import get_tokenlizer
from groundingdino.util.inference import predict
from groundingdino.util.slconfig import SLConfig
from groundingdino.util.utils import clean_state_dict
from PIL import Image
from torch import nn
from torchvision.transforms import functional as TF
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

import groundingdino.config as gd_config

CONFIG_FILE = Path(gd_config.__file__).parent / "GroundingDINO_SwinT_OGC.py"
# [CLS] [SEP] . ? are looked up by GroundingDINO itself; [PAD] [UNK] [MASK] by the tokenizer.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?")
PAPER_SHORT_SIDE, PAPER_MAX_SIDE = 800, 1333
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class GroundingDinoBert(BertModel):
    """``BertModel`` with the transformers-4 mask helpers groundingdino's ``BertModelWarper`` uses."""

    def get_extended_attention_mask(self, attention_mask: torch.Tensor, input_shape=None, device=None) -> torch.Tensor:
        """0/1 mask [B,T] or [B,T,T] → additive [B,1,1,T] or [B,1,T,T] (0 = attend, dtype min = masked)."""
        mask = attention_mask[:, None, None, :] if attention_mask.dim() == 2 else attention_mask[:, None]
        return (1.0 - mask.to(self.dtype)) * torch.finfo(self.dtype).min

    # Only reached for decoder BERTs (cross-attention masks); same formula as above.
    invert_attention_mask = get_extended_attention_mask

    def get_head_mask(self, head_mask: torch.Tensor | None, num_hidden_layers: int) -> list[None]:
        """No head pruning (groundingdino never passes a head mask): one ``None`` per layer."""
        if head_mask is not None:
            raise ValueError("GroundingDinoBert does not support head masks")
        return [None] * num_hidden_layers


def local_tokenizer(text: str) -> BertTokenizerFast:
    """Uncased WordPiece tokenizer whose vocabulary is ``SPECIAL_TOKENS`` + the words of ``text``
    (after BERT's own normalisation and pre-tokenisation), in sorted order; other words → [UNK]."""
    bare = BertTokenizerFast(vocab={t: i for i, t in enumerate(SPECIAL_TOKENS)})
    backend = bare.backend_tokenizer
    words = {w for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))}
    vocab = [*SPECIAL_TOKENS, *sorted(words - set(SPECIAL_TOKENS))]
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)})


@contextlib.contextmanager
def _text_side(tokenizer, bert: nn.Module) -> Iterator[None]:
    """Make groundingdino's two text factories return these objects, for this block only."""
    with (mock.patch.object(get_tokenlizer, "get_tokenlizer", lambda _name: tokenizer),
          mock.patch.object(get_tokenlizer, "get_pretrained_language_model", lambda _name: bert)):
        yield


def build_grounding_dino(*, checkpoint: Path | None, bert_dir: Path | None, vocabulary: str,
                         device: str = "cpu") -> nn.Module:
    """GroundingDINO Swin-T OGC in eval mode.

    ``checkpoint`` and ``bert_dir`` given → the real model; ``checkpoint`` None → random init from
    the torch RNG (seed it around the call), tokenizer over the words of ``vocabulary``.
    Touches no network and, for random init, no file.
    """
    if checkpoint is None:
        tokenizer, bert = local_tokenizer(vocabulary), GroundingDinoBert(BertConfig())
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(bert_dir), local_files_only=True)
        bert = GroundingDinoBert.from_pretrained(str(bert_dir), local_files_only=True)
    args = SLConfig.fromfile(str(CONFIG_FILE))
    args.device = device
    args.use_checkpoint = args.use_transformer_ckpt = False  # activation checkpointing: training-only
    with _text_side(tokenizer, bert):
        model = build_model(args)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # official file holds non-tensors
        model.load_state_dict(clean_state_dict(state["model"]), strict=False)
    return model.eval().to(device)


def detect(model: nn.Module, rgb: np.ndarray, caption: str, *, box_threshold: float, text_threshold: float,
           short_side: int = PAPER_SHORT_SIDE, max_boxes: int | None = None,
           device: str = "cpu") -> tuple[np.ndarray, list[str]]:
    """Boxes for ``caption`` (lower-case, ending with ".") on uint8 [H,W,3] ``rgb``: float32
    [n,4] xyxy in pixels, and the phrase of each box.

    The image is resized so its short side is ``short_side`` (long side ≤ 1333·short_side/800,
    the paper's 800/1333 by default). ``max_boxes``: keep only the best-scoring ones (None = all).
    """
    max_side = round(PAPER_MAX_SIDE * short_side / PAPER_SHORT_SIDE)
    image, _ = resize(Image.fromarray(rgb), None, short_side, max_side)
    tensor = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
    boxes, scores, phrases = predict(model, tensor, caption, box_threshold, text_threshold, device=device)
    if max_boxes is not None:
        best = torch.argsort(scores, descending=True, stable=True)[:max_boxes]
        boxes, phrases = boxes[best], [phrases[i] for i in best.tolist()]
    h, w = rgb.shape[:2]
    cx, cy, bw, bh = boxes.unbind(1)
    xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * torch.tensor([w, h, w, h])
    return xyxy.numpy().astype(np.float32), phrases
