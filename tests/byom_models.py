"""The models users bring, built small from configs with random init (no download): a BERT-style
sequence classifier, a GPT-2-style causal LM with tied embeddings, a ViT-style image classifier
(each saved with ``save_pretrained`` and sharded, with tokenizer / image processor), and a
faithful ResNet-style CNN (BasicBlock: conv-BN-ReLU-conv-BN, ``out += identity``) written by hand
because torchvision does not install against this CPU torch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

WORDS = ["the", "a", "model", "is", "good", "bad", "secure", "data", "token", "text", "cat", "dog"]
SHARD = "20KB"


def _bert_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def _word_tokenizer(extra_words: int = 0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    filler = [f"w{i}" for i in range(extra_words)]
    vocab = {w: i for i, w in enumerate(["<eos>", "<unk>", *WORDS, *filler])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")


def tiny_bert(directory: Path, *, seed: int = 0, hidden_size: int = 32) -> Path:
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden_size, max_position_embeddings=32, num_labels=3,
                     id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, max_shard_size=SHARD)
    _bert_tokenizer().save_pretrained(directory)
    return directory


def tiny_gpt2(directory: Path, *, seed: int = 0, extra_words: int = 0) -> Path:
    """``extra_words``: filler tokens that widen the vocabulary (a white-box mark on GPT-2 lives in
    the token embedding, one carrier entry per token id: 32 bits need at least 32 ids)."""
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(WORDS) + 2 + extra_words, n_embd=32, n_layer=2, n_head=2, n_positions=32,
                     bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, max_shard_size=SHARD)
    _word_tokenizer(extra_words).save_pretrained(directory)
    return directory


def tiny_vit(directory: Path, *, seed: int = 0) -> Path:
    from transformers import AutoModelForImageClassification, ViTConfig, ViTImageProcessor

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, num_labels=4)
    model = AutoModelForImageClassification.from_config(cfg).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, max_shard_size=SHARD)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5, 0.4, 0.3],
                      image_std=[0.2, 0.25, 0.3]).save_pretrained(directory)
    return directory


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convs with BatchNorm, identity shortcut, ``out += identity``.
    ``norm`` makes each norm layer (GroupNorm for DP tests); the one block every test uses."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *,
                 norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), norm(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNetMini(nn.Module):
    """ResNet layout (stem conv-BN-ReLU, stages of BasicBlocks, global average pool, fc), small widths."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (8, 16)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, inplanes = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(BasicBlock(inplanes, w, 1 if i == 0 else 2), BasicBlock(w, w)))
            inplanes = w
        self.layer1, self.layer2 = stages[0], stages[1]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def bn_mlp(in_features: int, num_classes: int) -> nn.Module:
    """A flat MLP with BatchNorm, which DP training replaces by GroupNorm (``privacy.model_fixes``)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, num_classes))


def resnet_mini(num_classes: int = 10) -> ResNetMini:
    return ResNetMini(num_classes=num_classes)


def trained_resnet(seed: int = 0, num_classes: int = 10) -> ResNetMini:
    """A ResNetMini whose BatchNorm running statistics are not the defaults (one training-mode pass)."""
    torch.manual_seed(seed)
    model = ResNetMini(num_classes)
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


# --- factories for `torchshield train` (model: {type: "byom_models:...", pretrained: DIR}) -------------
# `train` reads numeric tables (CSV/Parquet): a row is the flattened input. These wrappers are what a
# user writes to fine-tune their own model with it today: start from the saved weights, take the
# row, give logits. Token ids arrive as float columns (normalize: none) and are rounded to int64.

class TokenRows(nn.Module):
    """A Hugging Face token model on rows of token ids: sequence-classifier logits, or for a causal LM
    the next-token logits at the last position (next-token fine-tuning as classification)."""

    def __init__(self, model: nn.Module, *, causal: bool, pad_id: int = 0) -> None:
        super().__init__()
        self.model, self.causal, self.pad_id = model, causal, pad_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.round().long()
        if self.causal:
            return self.model(input_ids=ids).logits[:, -1]
        return self.model(input_ids=ids, attention_mask=(ids != self.pad_id).long()).logits


class ImageRows(nn.Module):
    """An image model on flattened rows: ``N x (C*H*W)`` -> ``N x C x H x W`` -> logits."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...], *, hf: bool) -> None:
        super().__init__()
        self.model, self.shape, self.hf = model, tuple(shape), hf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, *self.shape)
        return self.model(pixel_values=x).logits if self.hf else self.model(x)


def bert_rows(pretrained: str, num_classes: int = 3) -> TokenRows:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(pretrained)
    assert model.config.num_labels == num_classes, (model.config.num_labels, num_classes)
    return TokenRows(model, causal=False)


def gpt2_rows(pretrained: str) -> TokenRows:
    from transformers import AutoModelForCausalLM

    return TokenRows(AutoModelForCausalLM.from_pretrained(pretrained), causal=True)


def vit_rows(pretrained: str) -> ImageRows:
    from transformers import AutoModelForImageClassification

    return ImageRows(AutoModelForImageClassification.from_pretrained(pretrained), (3, 16, 16), hf=True)


def resnet_rows(pretrained: str, num_classes: int = 4) -> ImageRows:
    model = ResNetMini(num_classes=num_classes)
    model.load_state_dict(torch.load(pretrained, weights_only=True))
    return ImageRows(model, (3, 16, 16), hf=False)
