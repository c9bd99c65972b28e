"""3D-GANTex's core: face geometry and texture (``face3d``) and GAN inversion (``gan``).

Plain PyTorch; nothing here imports Lightning.
"""
