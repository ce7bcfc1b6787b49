"""Writes a test checkpoint with deterministic random weights that A1111 loads like a real one.

The model is built by the same code A1111 uses (ldm's LatentDiffusion from the stable-diffusion
repository A1111 pins, instantiated from the .yaml that is copied beside the checkpoint), so the
state dict has exactly the keys and shapes A1111's loader expects. The CLIP text model is built
from the offline config (no hub download). Weights are seeded, and the layers ldm initialises to
zero get small random values, so the UNet and the VAE do real work. Weights are saved in fp16 and
kept small enough to stay finite in half precision on a GPU.

usage: python test_checkpoint.py WEBUI_DIR CONFIG_YAML SEED OUTPUT.safetensors
"""

import contextlib
import io
import sys
import warnings
from pathlib import Path


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    webui_dir, config_path, seed, output = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    sys.path.insert(0, str(webui_dir / "repositories" / "stable-diffusion-stability-ai"))

    import torch
    import transformers
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    # FrozenCLIPEmbedder calls CLIPTextModel.from_pretrained, which would fetch 1.7 GB of weights:
    # build the model from the (offline) config instead; the weights are ours anyway.
    def text_model_from_config(name, *args, **kwargs):
        config = transformers.CLIPTextConfig.from_pretrained(name, local_files_only=True)
        return transformers.CLIPTextModel(config)

    transformers.CLIPTextModel.from_pretrained = text_model_from_config

    from ldm.util import instantiate_from_config

    torch.manual_seed(seed)
    config = OmegaConf.load(config_path)
    # ldm narrates every layer it builds; only the summary line below is worth reading.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = instantiate_from_config(config.model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1 and not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
             if v.is_floating_point()}
    state.update({k: v.detach().contiguous() for k, v in model.state_dict().items()
                  if not v.is_floating_point()})
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(output), metadata={"format": "pt", "sd_worker_test_seed": str(seed)})
    params = sum(v.numel() for v in state.values())
    print(f"{output.name}: {len(state)} tensors, {params / 1e6:.1f} M values, seed {seed}")


if __name__ == "__main__":
    main()
