"""StyleGAN generators, checkpoint loading and GAN inversion for 3D-GANTex (plain PyTorch)."""
