"""Weight initialisation shared by the GAN components."""

from torch import nn


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al., 2016): conv weights N(0, 0.02), batch-norm scales N(1, 0.02), biases 0.

    PyTorch's default (Kaiming-uniform) lets the discriminator win within a few hundred steps on MNIST.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
