"""Builds the Hugging Face cache entry that A1111 reads for SD 1.x models, offline.

A1111 loads the tokenizer and the text-model config of `openai/clip-vit-large-patch14` at the
first model load (the weights come from the checkpoint). Without a hub, those five files are made
here from the BPE that open_clip ships (`bpe_simple_vocab_16e6.txt.gz`: the same byte-level BPE
the hub's vocab.json and merges.txt encode), and the result is verified: the transformers
tokenizer built from the new files must give the same ids as open_clip's own tokenizer.

usage: python hf_clip_cache.py HF_HOME
"""

import gzip
import hashlib
import json
import sys
from pathlib import Path

REPO = "openai/clip-vit-large-patch14"
VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Text chosen to reach the tokenizer's corners: case, punctuation, digits, accents, emoji, spacing.
SAMPLES = [
    "a photo of a cat",
    "A lighthouse on a cliff at dawn, 4k, highly detailed!!",
    "portrait of an astronaut (riding a horse:1.2) [oil painting]",
    "Café crème brûlée — naïve façade",
    "emoji 🐱🚀 and    many   spaces\tand tabs",
    "numbers 1234567890 3.14159 and symbols @#$%^&*()_+",
]


def bytes_to_unicode():
    """GPT-2's reversible byte-to-character table (as in open_clip and transformers)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def added_token(content):
    # transformers 4.30 only turns a dict back into an AddedToken when it carries "__type".
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def build_files(bpe_path):
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    # open_clip's SimpleTokenizer reads exactly these lines: 49152 - 256 - 2 merges.
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges]
    vocab += [BOS, EOS]
    if len(vocab) != VOCAB_SIZE or len(set(vocab)) != VOCAB_SIZE:
        raise SystemExit(f"unexpected BPE in {bpe_path}: {len(vocab)} tokens, {len(set(vocab))} distinct")
    files = {
        "vocab.json": json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "tokenizer_config.json": json.dumps(
            {
                "unk_token": added_token(EOS),
                "bos_token": added_token(BOS),
                "eos_token": added_token(EOS),
                "pad_token": EOS,
                "add_prefix_space": False,
                "errors": "replace",
                "do_lower_case": True,
                "model_max_length": 77,
                "name_or_path": REPO,
                "tokenizer_class": "CLIPTokenizer",
            },
            indent=2,
        ),
        "special_tokens_map.json": json.dumps(
            {
                "bos_token": added_token(BOS),
                "eos_token": added_token(EOS),
                "unk_token": added_token(EOS),
                "pad_token": EOS,
            },
            indent=2,
        ),
        # CLIP ViT-L/14's published architecture. A1111 builds the text model from this config
        # and takes its weights from the checkpoint.
        "config.json": json.dumps(
            {
                "_name_or_path": REPO,
                "architectures": ["CLIPModel"],
                "initializer_factor": 1.0,
                "logit_scale_init_value": 2.6592,
                "model_type": "clip",
                "projection_dim": 768,
                "text_config": {
                    "bos_token_id": 0,
                    "eos_token_id": 2,
                    "pad_token_id": 1,
                    "hidden_act": "quick_gelu",
                    "hidden_size": 768,
                    "intermediate_size": 3072,
                    "layer_norm_eps": 1e-05,
                    "max_position_embeddings": 77,
                    "model_type": "clip_text_model",
                    "num_attention_heads": 12,
                    "num_hidden_layers": 12,
                    "projection_dim": 768,
                    "vocab_size": VOCAB_SIZE,
                },
                "vision_config": {
                    "hidden_act": "quick_gelu",
                    "hidden_size": 1024,
                    "image_size": 224,
                    "intermediate_size": 4096,
                    "layer_norm_eps": 1e-05,
                    "model_type": "clip_vision_model",
                    "num_attention_heads": 16,
                    "num_hidden_layers": 24,
                    "patch_size": 14,
                    "projection_dim": 768,
                },
                "torch_dtype": "float32",
            },
            indent=2,
        ),
    }
    return files


def verify(snapshot, bpe_path):
    import warnings

    warnings.simplefilter("ignore")  # open_clip's and timm's import-time FutureWarnings
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer, CLIPTextConfig

    ours = CLIPTokenizer.from_pretrained(str(snapshot), local_files_only=True)
    reference = SimpleTokenizer(str(bpe_path))
    if len(ours) != VOCAB_SIZE or ours.bos_token_id != 49406 or ours.eos_token_id != 49407:
        raise SystemExit(f"tokenizer check failed: {len(ours)} tokens, bos {ours.bos_token_id}, eos {ours.eos_token_id}")
    for text in SAMPLES:
        got = ours(text)["input_ids"]
        want = [49406] + reference.encode(text) + [49407]
        if got != want:
            raise SystemExit(f"tokenizer check failed on {text!r}: {got} != {want}")
    config = CLIPTextConfig.from_pretrained(str(snapshot), local_files_only=True)
    if (config.hidden_size, config.num_hidden_layers, config.vocab_size) != (768, 12, VOCAB_SIZE):
        raise SystemExit("text config check failed")


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    hf_home = Path(sys.argv[1])
    import open_clip.tokenizer

    bpe_path = Path(open_clip.tokenizer.default_bpe())
    files = build_files(bpe_path)
    digest = hashlib.sha1()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    revision = digest.hexdigest()
    repo_dir = hf_home / "hub" / ("models--" + REPO.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (snapshot / name).write_text(text, encoding="utf-8")
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    verify(snapshot, bpe_path)
    print(f"{REPO} at {snapshot}: tokenizer verified against open_clip on {len(SAMPLES)} texts")


if __name__ == "__main__":
    main()
